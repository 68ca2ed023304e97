"""FFN neurons: layout per family, gating == removal (torch-pruning), exact parameter arithmetic, save/load,
known-answer scores (planted dead neurons rank last), selection, plan/score files, ONNX parity; and the head
surgery checked against torch-pruning's channel pruners."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch_pruning as tp

from prunehead import (AccuracyBudget, Amount, Cut, MacBudget, PruningPlan, Ranking, SavedPlan, load, plan_of, prune_,
                       save_pretrained)
from prunehead.commands.prune_request import request_from_flags
from prunehead.control import controlled
from prunehead.cost import count_params
from prunehead.errors import InputError
from prunehead.export.latency import ort_session
from prunehead.export.onnx import check_onnx, export_onnx
from prunehead.families import family_of
from prunehead.families.base import head_index
from prunehead.units.ffn import PRUNED_FFN_KEY, ffn_sites, kept_neurons, neuron_gating, prune_ffn_
from prunehead.heads import head_adapter
from prunehead.pruning.plan import select_ffn
from prunehead.pruning.score_files import load_scores, save_scores
from prunehead.scorers.ffn import score_ffn
from tests.conftest import FAMILIES, ce, inputs_for, logits, tiny


def neurons(ratio: float) -> Amount:
    """The CLI's default neuron cut: `ratio` of each layer, keeping one."""
    return Amount(ratio, scope="per_layer", min_per_layer=1)

I = 64  # intermediate size of every tiny family (whisper-encoder-tiny: encoder_ffn_dim = 2 * 32)
# Neurons to remove (original ids): layer 0 loses 5, layer 1 all but one.
FFN = {0: (0, 7, 8, 30, 63), 1: tuple(i for i in range(I) if i != 17)}
HEADS = {0: (1,), 1: (0, 2)}

EXPECTED_PATHS = {  # where each family's feed-forward projections are, written out by hand
    "wav2vec2-tiny": lambda m, l: (m.wav2vec2.encoder.layers[l].feed_forward.intermediate_dense,
                                   m.wav2vec2.encoder.layers[l].feed_forward.output_dense),
    "hubert-tiny": lambda m, l: (m.hubert.encoder.layers[l].feed_forward.intermediate_dense,
                                 m.hubert.encoder.layers[l].feed_forward.output_dense),
    "data2vec-audio-tiny": lambda m, l: (m.data2vec_audio.encoder.layers[l].feed_forward.intermediate_dense,
                                         m.data2vec_audio.encoder.layers[l].feed_forward.output_dense),
    "wavlm-tiny": lambda m, l: (m.wavlm.encoder.layers[l].feed_forward.intermediate_dense,
                                m.wavlm.encoder.layers[l].feed_forward.output_dense),
    "whisper-encoder-tiny": lambda m, l: (m.encoder.layers[l].fc1, m.encoder.layers[l].fc2),
    "bert-tiny": lambda m, l: (m.bert.encoder.layer[l].intermediate.dense, m.bert.encoder.layer[l].output.dense),
}


def jittered(arch: str, seed: int = 0) -> torch.nn.Module:
    """A tiny model with N(0, 0.1) noise on every parameter (non-zero biases everywhere), in eval mode."""
    model = tiny(arch)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def ffn_plan(model: torch.nn.Module, heads: dict = HEADS, ffn: dict = FFN) -> PruningPlan:
    adapter = head_adapter(model)
    return PruningPlan(adapter.num_layers, adapter.num_heads, heads, ffn, I)



@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_finds_its_feed_forward_projections(arch):
    model = tiny(arch)
    sites = ffn_sites(model)
    assert len(sites) == 2
    for site in sites:
        intermediate, output = EXPECTED_PATHS[arch](model, site.layer)
        assert site.intermediate is intermediate and site.output is output
        assert site.intermediate_size == intermediate.out_features == output.in_features == I


def test_the_default_contract_finds_a_new_familys_feed_forward_blocks():
    """A family that only says where its encoder is (here WavLM) gets `ffn_sites` from the base class."""
    from transformers import WavLMConfig, WavLMForSequenceClassification

    from prunehead.families.base import Family

    class Bare(Family):
        def encoder(self, model):
            return model.wavlm.encoder

    model = WavLMForSequenceClassification(WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=48, conv_dim=(32,) * 7))
    sites = Bare().ffn_sites(model)
    assert [s.intermediate for s in sites] == [l.feed_forward.intermediate_dense for l in model.wavlm.encoder.layers]
    assert [s.output for s in sites] == [l.feed_forward.output_dense for l in model.wavlm.encoder.layers]
    assert {s.intermediate_size for s in sites} == {48}


@pytest.mark.parametrize("arch", FAMILIES)
def test_pruned_heads_and_neurons_equal_the_gated_dense_model(arch):
    dense = jittered(arch)
    plan = ffn_plan(dense)
    inputs = inputs_for(arch, batch=3)
    with controlled(dense) as ctl, ctl.gating(plan.keep_mask()), neuron_gating(dense, plan.ffn_keep_mask()):
        gated = logits(dense, inputs)
    pruned = prune_ffn_(prune_(copy.deepcopy(dense), plan), plan)
    torch.testing.assert_close(logits(pruned, inputs), gated)
    assert [s.intermediate.out_features for s in ffn_sites(pruned)] == [I - 5, 1]
    assert kept_neurons(pruned) == [[i for i in range(I) if i not in FFN[0]], [17]]
    assert not torch.allclose(logits(dense, inputs), gated)  # the plan does change the model


def test_a_layer_without_neurons_adds_only_the_output_bias_like_a_zero_gate():
    dense = jittered("wav2vec2-tiny")
    plan = ffn_plan(dense, heads={}, ffn={1: tuple(range(I))})
    inputs = inputs_for("wav2vec2-tiny")
    with neuron_gating(dense, plan.ffn_keep_mask()):
        gated = logits(dense, inputs)
    pruned = prune_ffn_(copy.deepcopy(dense), plan)
    assert ffn_sites(pruned)[1].output.weight.shape == (32, 0)
    torch.testing.assert_close(logits(pruned, inputs), gated)


def test_pruning_works_on_the_meta_device():
    """No CPU-created index meets the model's device (how GPU device bugs are reproduced on CPU)."""
    model = tiny("wav2vec2-tiny").to("meta")
    pruned = prune_ffn_(model, ffn_plan(tiny("wav2vec2-tiny"), heads={}))
    assert [tuple(s.intermediate.weight.shape) for s in ffn_sites(pruned)] == [(I - 5, 32), (1, 32)]
    assert pruned.wav2vec2.encoder.layers[0].feed_forward.output_dense.weight.is_meta
    with neuron_gating(pruned, torch.ones(2, I, device="meta")), torch.no_grad():
        out = pruned(input_values=torch.zeros(1, 4000, device="meta")).logits
    assert out.is_meta and out.shape == (1, 3)


@pytest.mark.parametrize("arch", FAMILIES)
def test_parameter_count_drops_by_exactly_the_removed_rows_and_columns(arch):
    dense = tiny(arch)
    D = family_of(dense).hidden_size(dense.config)
    pruned = prune_ffn_(copy.deepcopy(dense), ffn_plan(dense, heads={}))
    removed = 5 + (I - 1)
    # each neuron: one intermediate row (D weights + 1 bias) and one output column (D weights)
    assert count_params(dense) - count_params(pruned) == removed * (2 * D + 1)


@pytest.mark.parametrize("arch", FAMILIES)
def test_save_load_round_trip_keeps_per_layer_widths(arch, tmp_path):
    heads = HEADS
    plan = ffn_plan(tiny(arch), heads=heads)
    pruned = prune_ffn_(prune_(jittered(arch), plan), plan)
    save_pretrained(pruned, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved[PRUNED_FFN_KEY] == {"0": list(FFN[0]), "1": list(FFN[1])}
    assert PruningPlan.load(tmp_path / "m" / "plan.json") == plan == plan_of(pruned)
    loaded = load(tmp_path / "m")
    assert [s.intermediate.out_features for s in ffn_sites(loaded)] == [I - 5, 1]
    inputs = inputs_for(arch)
    torch.testing.assert_close(logits(loaded, inputs), logits(pruned, inputs))


def test_a_second_prune_uses_original_ids_and_equals_one_prune_of_the_union():
    dense = jittered("wav2vec2-tiny")
    first = ffn_plan(dense, heads={}, ffn={0: (1, 2, 3)})
    second = ffn_plan(dense, heads={}, ffn={0: (2, 40), 1: (5,)})
    twice = prune_ffn_(prune_ffn_(copy.deepcopy(dense), first), second)
    once = prune_ffn_(copy.deepcopy(dense), first.union(second))
    assert getattr(twice.config, PRUNED_FFN_KEY) == {"0": [1, 2, 3, 40], "1": [5]}
    inputs = inputs_for("wav2vec2-tiny")
    torch.testing.assert_close(logits(twice, inputs), logits(once, inputs), rtol=0, atol=0)


def test_gating_hooks_are_removed_even_when_the_forward_raises():
    model = tiny("wav2vec2-tiny")
    with pytest.raises(RuntimeError, match="boom"):
        with neuron_gating(model, torch.zeros(2, I)):
            raise RuntimeError("boom")
    assert all(not s.output._forward_pre_hooks for s in ffn_sites(model))
    with pytest.raises(InputError, match="neuron gate"):
        with neuron_gating(model, torch.ones(2, I + 1)):
            pass


# -- scores ------------------------------------------------------------------------------------------------

DEAD = {0: (3, 10, 50), 1: (0, 33)}


def kill_neurons_(model: torch.nn.Module, dead: dict = DEAD) -> torch.nn.Module:
    """Zero the intermediate rows and output columns of `dead` ({layer: neurons}): they contribute nothing."""
    with torch.no_grad():
        for site in ffn_sites(model):
            ids = list(dead.get(site.layer, ()))
            site.intermediate.weight[ids] = 0
            site.output.weight[:, ids] = 0
    return model


def labelled(arch: str, seed: int) -> dict:
    batch = inputs_for(arch, batch=4, seed=seed)
    return {**batch, "labels": torch.tensor([0, 1, 2, 1])}


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
@pytest.mark.parametrize("arch", FAMILIES)
def test_planted_dead_neurons_rank_last(arch, method):
    model = kill_neurons_(jittered(arch))
    scores = score_ffn(model, [labelled(arch, 0), labelled(arch, 1)], ce, scorer=method)
    assert scores.shape == (2, I)
    for layer, dead in DEAD.items():
        ranked = torch.argsort(scores[layer], stable=True).tolist()
        assert sorted(ranked[:len(dead)]) == list(dead)
        assert scores[layer, list(dead)].max() == 0 < scores[layer].max()
    plan = select_ffn(scores, PruningPlan(2, 4), ratio=3 / I, scope="per_layer")
    assert set(plan.pruned_ffn[1]) > set(DEAD[1]) and plan.pruned_ffn[0] == DEAD[0]


def test_taylor_of_a_batch_equals_the_mean_of_one_sample_scores():
    model = jittered("wav2vec2-tiny")
    batch = labelled("wav2vec2-tiny", 0)
    together = score_ffn(model, [batch], ce, normalize_layers=False)
    alone = [score_ffn(model, [{k: v[i:i + 1] for k, v in batch.items()}], ce, normalize_layers=False)
             for i in range(4)]
    torch.testing.assert_close(together, torch.stack(alone).mean(0))


def test_taylor_is_gradient_times_activation():
    """|sum_t a_t dL/da_t| computed by hand with a hook on the activations, for one sample."""
    model = jittered("bert-tiny")
    batch = labelled("bert-tiny", 0)
    one = {k: v[:1] for k, v in batch.items()}
    saved = []
    handle = ffn_sites(model)[1].output.register_forward_pre_hook(lambda m, args: saved.append(args[0]))
    try:
        out = model(input_ids=one["input_ids"])
        (grad,) = torch.autograd.grad(ce(out, one).sum(), saved[0])  # (1, T, I)
    finally:
        handle.remove()
    expected = (saved[0] * grad).sum(1).abs()[0].double()  # (I,)
    torch.testing.assert_close(score_ffn(model, [one], ce, normalize_layers=False)[1], expected.detach())


def test_scores_of_a_pruned_model_stay_on_the_original_grid():
    model = prune_ffn_(jittered("wav2vec2-tiny"), ffn_plan(tiny("wav2vec2-tiny"), heads={}))
    for method in ("taylor", "magnitude"):
        scores = score_ffn(model, [labelled("wav2vec2-tiny", 0)], ce, scorer=method)
        kept = scores[0, [i for i in range(I) if i not in FFN[0]]]
        assert (scores[0, list(FFN[0])] < kept.min()).all()  # removed neurons stay first in line
        assert torch.isfinite(scores).all()


def test_magnitude_is_the_norm_of_the_in_row_and_out_column():
    model = tiny("hubert-tiny")
    site = ffn_sites(model)[0]
    w_in, w_out = site.intermediate.weight[5], site.output.weight[:, 5]
    expected = torch.cat([w_in, w_out]).double().norm()
    torch.testing.assert_close(score_ffn(model, scorer="magnitude", normalize_layers=False)[0, 5], expected.detach())


def test_unknown_method_and_missing_objective_are_user_errors():
    model = tiny("wav2vec2-tiny")
    with pytest.raises(InputError, match="taylor, magnitude"):
        score_ffn(model, scorer="fisher")
    with pytest.raises(InputError, match="objective"):
        score_ffn(model, [labelled("wav2vec2-tiny", 0)])


# -- selection, plan and score files -----------------------------------------------------------------------

def test_select_ffn_per_layer_and_global_with_a_floor():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    heads = PruningPlan(2, 4, {1: (3,)})
    per_layer = select_ffn(scores, heads, ratio=0.5)
    assert per_layer.pruned_ffn == {0: (0, 1), 1: (0, 1)} and per_layer.pruned_heads == heads.pruned_heads
    assert select_ffn(scores, heads, ratio=0.5, scope="global").pruned_ffn == {0: (0, 1, 2), 1: (0,)}  # floor 1
    assert select_ffn(scores, heads, ratio=0.5, scope="global", min_neurons_per_layer=2).pruned_ffn == {
        0: (0, 1), 1: (0, 1)}
    assert select_ffn(scores, per_layer, ratio=0.25).pruned_ffn == per_layer.pruned_ffn  # already at target
    assert select_ffn(scores, heads, ratio=1.0).pruned_ffn == {0: (0, 1, 2), 1: (0, 1, 2)}  # the floor holds
    with pytest.raises(InputError, match="--ffn-ratio"):
        select_ffn(scores, heads, ratio=1.5)
    with pytest.raises(InputError, match="FFN scores are 2 x 4"):
        select_ffn(scores, PruningPlan(3, 4), ratio=0.5)


def test_plan_json_round_trips_and_old_plans_still_load(tmp_path):
    plan = PruningPlan(2, 4, {0: (1,)}, {1: (2, 9)}, 16)
    plan.save(tmp_path / "plan.json")
    assert PruningPlan.load(tmp_path / "plan.json") == plan
    old = {"format": "prunehead.plan", "version": 1, "num_layers": 2, "num_heads": 4, "pruned_heads": {"0": [1]}}
    assert PruningPlan.from_json(old) == PruningPlan(2, 4, {0: (1,)})
    assert PruningPlan(2, 4, {0: (1,)}).to_json() == old  # head-only plans keep their shape
    with pytest.raises(InputError, match="outside the 2 x 16 grid"):
        PruningPlan.from_json({**plan.to_json(), "pruned_ffn": {"1": [16]}})
    torch.testing.assert_close(plan.ffn_keep_mask().sum(1), torch.tensor([16.0, 14.0]))
    assert plan.with_ffn_mask(plan.ffn_keep_mask()) == plan


def test_score_files_record_their_units(tmp_path):
    ffn, heads = torch.rand(2, 16, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)
    save_scores(tmp_path / "ffn.json", ffn, "taylor", "m", units="ffn")
    save_scores(tmp_path / "heads.json", heads, "gradient", "m")
    data = json.loads((tmp_path / "ffn.json").read_text())
    assert (data["units"], data["intermediate_size"]) == ("ffn", 16)
    torch.testing.assert_close(load_scores(tmp_path / "ffn.json", expect=(2, 16), units="ffn"), ffn)
    with pytest.raises(InputError, match="--ffn-scores"):
        load_scores(tmp_path / "ffn.json")
    with pytest.raises(InputError, match="scores heads, not ffn"):
        load_scores(tmp_path / "heads.json", units="ffn")
    legacy = json.loads((tmp_path / "heads.json").read_text())
    del legacy["units"]
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    torch.testing.assert_close(load_scores(tmp_path / "legacy.json"), heads)


# -- torch-pruning and ONNX --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["wav2vec2-tiny", "whisper-encoder-tiny", "bert-tiny"])
def test_head_surgery_equals_torch_pruning_channel_pruners(arch):
    dense = jittered(arch)
    plan = PruningPlan(2, 4, {0: (1, 3), 1: (2,)})
    ours = prune_(copy.deepcopy(dense), plan)
    theirs = copy.deepcopy(dense)
    adapter = head_adapter(theirs)
    for site in adapter.sites:
        index = head_index(list(plan.pruned_heads[site.layer]), adapter.head_dim, torch.device("cpu")).tolist()
        for linear in (site.q, site.k, site.v):
            tp.prune_linear_out_channels(linear, index)
        tp.prune_linear_in_channels(site.out, index)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for key, value in theirs_state.items():
        torch.testing.assert_close(ours_state[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("arch, shape", [
    ("whisper-encoder-tiny", (2, 100)),
    pytest.param("wav2vec2-tiny", (2, 7_001), marks=pytest.mark.slow),  # ~40 s of export on 2 cores
    pytest.param("bert-tiny", (3, 23), marks=pytest.mark.slow),
])
def test_onnx_export_of_a_head_and_ffn_pruned_model_matches_onnx_runtime(tmp_path, arch, shape):
    model = jittered(arch)
    plan = ffn_plan(model)
    pruned = prune_ffn_(prune_(model, plan), plan)
    sig = export_onnx(pruned, tmp_path / "m.onnx")
    result = check_onnx(pruned, tmp_path / "m.onnx", sig)
    assert result.max_abs_diff <= 1e-4 and result.agreement == 1.0
    inputs = sig.inputs(*shape, seed=3, pad=True)
    got = ort_session(tmp_path / "m.onnx", spin=False).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    np.testing.assert_allclose(got, logits(pruned, inputs).numpy(), atol=1e-4, rtol=0)


# -- the library function prunehead.prune -----------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tests.conftest import dead_head_workspace

    root = tmp_path_factory.mktemp("ffn_api")
    dead_head_workspace(root, {"train": 6, "test": 6}, "train")
    return root


def test_prune_removes_heads_and_neurons_and_saves_both(workspace, tmp_path):
    import prunehead

    root = workspace
    heads_only = prunehead.prune(str(root / "model"), Cut.heads(0.25), ranking=root / "gradient.json")
    both = prunehead.prune(str(root / "model"), Cut({"heads": Amount(0.25), "ffn": neurons(0.25)}),
                           ranking={"heads": root / "gradient.json", "ffn": Ranking("magnitude")},
                           data=str(root / "data"))
    expected = select_ffn(score_ffn(load(root / "model"), scorer="magnitude"), heads_only.plan, ratio=0.25)
    assert both.plan == expected and both.plan.num_pruned_ffn == 2 * 16
    assert both.report["ffn"]["pruned_ffn"] == expected.to_json()["pruned_ffn"]
    assert count_params(heads_only.model) - count_params(both.model) == 2 * 16 * (2 * 32 + 1)
    assert both.report["metrics_after"]["accuracy"] == prunehead.evaluate(both.model, str(root / "data"))["accuracy"]
    save_pretrained(both.model, tmp_path / "m")
    assert PruningPlan.load(tmp_path / "m" / "plan.json") == both.plan
    x = inputs_for("wav2vec2-tiny")
    torch.testing.assert_close(logits(load(tmp_path / "m"), x), logits(both.model, x))


def test_prune_neurons_only_from_a_score_file_dry_run_and_plan(workspace, tmp_path):
    import prunehead

    root = workspace
    planted = torch.rand(2, I, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1
    planted[0, [5, 6]] = 0.0
    save_scores(tmp_path / "ffn.json", planted, "planted", "m", units="ffn")
    decided = prunehead.prune(str(root / "model"), Cut({"ffn": neurons(2 / I)}), ranking={"ffn": tmp_path / "ffn.json"},
                              dry_run=True)
    assert decided.model is None and decided.plan.pruned_heads == {}
    assert decided.plan.pruned_ffn[0] == (5, 6) and len(decided.plan.pruned_ffn[1]) == 2
    applied = prunehead.prune(str(root / "model"), SavedPlan(decided.plan))
    assert [s.intermediate.out_features for s in ffn_sites(applied.model)] == [I - 2, I - 2]
    assert plan_of(applied.model) == decided.plan


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ffn_ratio": 0.2, "ratio": 0.2, "scores": "s.json"}, "--ffn-scores FILE or --data"),
    ({"ffn_ratio": 0.2, "ffn_scorer": "magnitude", "max_drop": 0.1, "data": "d"}, "choose how much goes"),
    ({"ffn_ratio": 1.5, "ffn_scorer": "magnitude"}, "--ffn-ratio must be within"),
    ({"ffn_ratio": 0.2, "ffn_scorer": "fisher"}, "--ffn-scorer must be one of"),
    ({"ffn_ratio": 0.2, "ffn_scorer": "magnitude", "scorer": "gradient", "data": "d"}, "only FFN neurons"),
    ({"ffn_scores": "f.json", "ratio": 0.2, "scores": "s.json"}, "give --ffn-ratio"),
])
def test_ffn_options_fail_before_loading(kwargs, fragment):

    with pytest.raises(InputError, match=fragment):
        request_from_flags(kwargs)  # the prune command's flags -> values, before anything loads


def test_cli_scores_ffn_neurons_and_prunes_with_them(workspace, tmp_path):
    """`score --units ffn` == score_ffn on the same drawn samples; `prune --ffn-scores` applies them."""
    import prunehead
    from tests.conftest import run_main

    root = workspace
    code, out, err = run_main("score", "-m", root / "model", "-d", root / "data", "--units", "ffn", "--scorer",
                              "taylor", "--samples", 4, "--out", tmp_path / "ffn.json")
    assert code == 0, err
    here = prunehead.score(str(root / "model"), str(root / "data"), Ranking("taylor", samples=4), units="ffn")
    written = load_scores(tmp_path / "ffn.json", expect=(2, I), units="ffn")
    torch.testing.assert_close(written, here.scores)
    assert len(here.sample_paths) == 4
    code, out, err = run_main("prune", "-m", root / "model", "-s", root / "gradient.json", "--ratio", 0.25,
                              "--ffn-ratio", 0.5, "--ffn-scores", tmp_path / "ffn.json", "--out", tmp_path / "p")
    assert code == 0, err
    assert "widths per layer: [32, 32]" in out
    pruned = load(tmp_path / "p")
    assert plan_of(pruned).pruned_ffn == select_ffn(written, PruningPlan(2, 4), ratio=0.5).pruned_ffn
    assert [s.intermediate.out_features for s in ffn_sites(pruned)] == [32, 32]
    code, out, err = run_main("score", "-m", root / "model", "-d", root / "data", "--units", "ffn", "--scorer",
                              "gradient", "--out", tmp_path / "bad.json")
    assert code == 1 and "taylor or magnitude" in err and "\n" not in err.strip()


def test_neuron_scores_from_another_model_warn(workspace, tmp_path, recwarn):
    """A `--ffn-scores` file records the scored weights; applying it to other weights warns in one line."""
    import warnings

    import prunehead
    from prunehead.scorers.parallel import model_fingerprint
    from tests.conftest import tiny

    root = workspace
    model = load(root / "model")
    planted = torch.rand(2, I, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    save_scores(tmp_path / "own.json", planted, "planted", "m", units="ffn", model_fingerprint=model_fingerprint(model))
    save_scores(tmp_path / "other.json", planted, "planted", "m", units="ffn",
                model_fingerprint=model_fingerprint(tiny("wav2vec2-tiny", seed=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prunehead.prune(str(root / "model"), Cut({"ffn": neurons(0.25)}), ranking={"ffn": tmp_path / "own.json"},
                        dry_run=True)
    with pytest.warns(UserWarning, match="another model") as caught:
        prunehead.prune(str(root / "model"), Cut({"ffn": neurons(0.25)}), ranking={"ffn": tmp_path / "other.json"},
                        dry_run=True)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)


@pytest.mark.parametrize("how", ["ratio", "target_macs"])
def test_heads_and_neurons_scored_on_one_read_of_the_score_split(workspace, monkeypatch, how):
    """Scoring heads (--scorer) and neurons (taylor) in one call reads the score split once, and the
    result equals scoring each apart."""
    import prunehead
    import prunehead.workspace as wsmod

    root = workspace
    reads = []
    real = wsmod.load_data
    monkeypatch.setattr(wsmod, "load_data", lambda data, split, *a, **k: reads.append(split) or real(data, split, *a, **k))
    target = {"ratio": Cut({"heads": Amount(0.25), "ffn": neurons(0.25)}), "target_macs": MacBudget(0.97)}[how]
    got = prunehead.prune(str(root / "model"), target, ranking={"heads": Ranking("gradient", samples=4),
                                                                "ffn": Ranking("taylor", samples=4)},
                          data=str(root / "data"), dry_run=True)
    assert reads == ["train"]
    monkeypatch.setattr(wsmod, "load_data", real)
    heads = prunehead.score(str(root / "model"), str(root / "data"), Ranking("gradient", samples=4)).scores
    ffn = prunehead.score(str(root / "model"), str(root / "data"), Ranking("taylor", samples=4), units="ffn").scores
    apart = prunehead.prune(str(root / "model"), target, ranking={"heads": heads, "ffn": ffn}, dry_run=True)
    assert got.plan == apart.plan and got.plan.num_pruned > 0 and got.plan.num_pruned_ffn > 0


def test_auto_scorer_on_the_selection_split_reads_it_once(workspace, monkeypatch):
    """`--scorer auto` whose score split is also the selection split (no validation here: both are
    train) reads it once, and the result equals the same run with the split read separately."""
    import prunehead
    import prunehead.workspace as wsmod
    from prunehead.api.common import ScoreSplit

    root = workspace
    reads = []
    real = wsmod.load_data
    monkeypatch.setattr(wsmod, "load_data", lambda data, split, *a, **k: reads.append(split) or real(data, split, *a, **k))
    kwargs = dict(ranking=Ranking("auto", samples=4, candidates=("gradient", "attention")), data=str(root / "data"),
                  dry_run=True)
    got = prunehead.prune(str(root / "model"), AccuracyBudget(0.0), **kwargs)
    assert reads == ["train"]
    monkeypatch.setattr(ScoreSplit, "share_", lambda self, ws: None)  # the old way: a second read
    apart = prunehead.prune(str(root / "model"), AccuracyBudget(0.0), **kwargs)
    assert reads == ["train", "train", "train"]
    assert got.plan == apart.plan and got.report["auto"] == apart.report["auto"]
