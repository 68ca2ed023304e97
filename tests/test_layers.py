"""Whole encoder layers as a unit kind: gating == removal on every family, plan.json in the dense model's ids,
reloading (prunehead.load, plain transformers with and without remote code), ONNX, planted identity layers,
the scorers against independent computations, exact MAC accounting with heads and neurons in the same
order, the CLI, repair after a layer cut, and the meta device."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

import prunehead
from prunehead.cli import app
from prunehead.cost import count_macs, example_inputs
from prunehead.errors import InputError, UnsupportedModelError
from prunehead.pruning.order import removal_order
from prunehead.pruning.plan import PruningPlan, select_layers
from prunehead.pruning.score_files import load_scores
from prunehead.scorers.depth import score_layers
from prunehead.surgery import history_of, plan_of
from prunehead.units.depth import drop_empty_layers_, encoder_layers, layer_gating, layer_macs, remove_layers_
from prunehead.units.kinds import KINDS, evaluate_gated, remove_all_

from conftest import check_saved_folder, cli_ok, ce, tiny

runner = CliRunner()
CASES = [("wav2vec2-tiny", {}), ("wav2vec2-tiny", {"do_stable_layer_norm": True}), ("hubert-tiny", {}),
         ("data2vec-audio-tiny", {}), ("wavlm-tiny", {}), ("whisper-encoder-tiny", {})]
PORTABLE = {"wav2vec2-tiny", "hubert-tiny", "data2vec-audio-tiny", "whisper-encoder-tiny"}  # remote code exists


def _inputs(model: torch.nn.Module, seed: int = 3, batch: int = 2) -> dict[str, torch.Tensor]:
    shapes = example_inputs(model, 1.0, batch=batch)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in shapes.items()}


def _model(arch: str, **overrides) -> torch.nn.Module:
    return tiny(arch, num_hidden_layers=4, **overrides)


@pytest.mark.parametrize("arch, overrides", CASES, ids=[a + ("-pre-ln" if o else "") for a, o in CASES])
def test_gating_equals_removal_and_the_folder_reloads_exactly(arch, overrides, tmp_path):
    model = _model(arch, **overrides)
    L, H = KINDS["heads"].grid(model)
    plan = PruningPlan(L, H, {0: (1,), 2: (0, 3), 3: (2,)}, pruned_layers=(1, 3))  # layer 3's heads go with it
    inputs = _inputs(model)
    with torch.no_grad():
        full = model(**inputs).logits
        gated = evaluate_gated(model, plan, lambda m: m(**inputs).logits)
        pruned = remove_all_(copy.deepcopy(model), plan)
        removed = pruned(**inputs).logits
    assert (full - removed).abs().max() > 1e-5  # the layers mattered
    torch.testing.assert_close(gated, removed, atol=1e-6, rtol=1e-6)
    assert len(encoder_layers(pruned)) == 2 and pruned.config.num_hidden_layers == 2
    assert plan_of(pruned).pruned_heads == {0: (1,), 1: (0, 3)}  # renumbered: layer 2 is now layer 1
    assert history_of(pruned) == PruningPlan(L, H, {0: (1,), 2: (0, 3)}, pruned_layers=(1, 3))
    prunehead.save_pretrained(pruned, tmp_path)
    assert prunehead.PruningPlan.load(tmp_path / "plan.json") == history_of(pruned)  # the dense model's ids
    again = prunehead.load(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, removed, atol=0, rtol=0)
    if arch in PORTABLE:
        plain = tf.AutoModelForAudioClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(**inputs).logits, removed, atol=0, rtol=0)


def test_a_model_that_lost_only_layers_is_a_plain_checkpoint(tmp_path):
    model = _model("wav2vec2-tiny")
    pruned = remove_layers_(copy.deepcopy(model), [0, 2])
    prunehead.save_pretrained(pruned, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "wav2vec2" and "auto_map" not in config
    assert config["num_hidden_layers"] == 2 and config["prunehead_pruned_layers"] == [0, 2]
    plain = tf.Wav2Vec2ForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, pruned(**inputs).logits, atol=0, rtol=0)
    assert "Wav2Vec2ForSequenceClassification.from_pretrained" in (tmp_path / "README.md").read_text()


def test_removing_layers_twice_keeps_the_original_ids():
    model = _model("wav2vec2-tiny")
    remove_layers_(model, [1])  # original 1
    remove_layers_(model, [1])  # now original 2
    assert history_of(model).pruned_layers == (1, 2)
    assert len(encoder_layers(model)) == 2


def test_wavlm_keeps_its_first_layer_and_scores_rank_it_last():
    model = _model("wavlm-tiny")
    with pytest.raises(InputError, match="cannot be removed"):
        remove_layers_(model, [0])
    assert KINDS["layers"].kept(model)[0] == []  # never offered to a budget
    batch = {**_inputs(model, batch=4), "labels": torch.tensor([0, 1, 2, 0])}
    scores = score_layers(model, [batch], ce, scorer="taylor")
    assert scores[0, 0] > scores[1:, 0].max()


def test_a_weighted_layer_sum_refuses_layer_removal_in_one_line():
    model = _model("wav2vec2-tiny", use_weighted_layer_sum=True)
    with pytest.raises(UnsupportedModelError, match="use_weighted_layer_sum"):
        remove_layers_(model, [1])


def _make_identity_(model: torch.nn.Module, layer: int) -> None:
    """Zero layer `layer`'s attention output and FFN output (weights and biases) of a pre-LN wav2vec2: the
    layer then computes h + 0 + 0 = h exactly."""
    block = encoder_layers(model)[layer]
    with torch.no_grad():
        for linear in (block.attention.out_proj, block.feed_forward.output_dense):
            linear.weight.zero_()
            linear.bias.zero_()


def test_a_planted_identity_layer_scores_zero_with_both_scorers_and_its_removal_changes_nothing():
    model = _model("wav2vec2-tiny", do_stable_layer_norm=True)
    _make_identity_(model, 2)
    batch = {**_inputs(model, batch=4), "labels": torch.tensor([0, 1, 2, 0])}
    for scorer in ("taylor", "occlusion"):
        scores = score_layers(model, [batch], ce, scorer=scorer)
        assert scores[2, 0].abs() < 1e-9 and scores[[0, 1, 3], 0].abs().min() > 1e-6, scorer
        plan = select_layers(scores if scorer == "taylor" else scores.abs(), PruningPlan(4, 4), count=1)
        assert plan.pruned_layers == (2,)
    inputs = _inputs(model)
    with torch.no_grad():
        pruned = remove_all_(copy.deepcopy(model), PruningPlan(4, 4, pruned_layers=(2,)))
        torch.testing.assert_close(pruned(**inputs).logits, model(**inputs).logits, atol=0, rtol=0)


def _ce64(outputs, batch):
    return torch.nn.functional.cross_entropy(outputs.logits, batch["labels"], reduction="none")  # float64 here


def test_taylor_matches_a_finite_difference_and_occlusion_a_removed_model():
    ce = _ce64
    model = _model("wav2vec2-tiny").double()
    batch = {**{k: v.double() for k, v in _inputs(model, batch=3).items()}, "labels": torch.tensor([0, 1, 2])}
    taylor = score_layers(model, [batch], ce, scorer="taylor")
    occlusion = score_layers(model, [batch], ce, scorer="occlusion")
    eps = 1e-6
    with torch.no_grad():
        base = ce(model(**{k: v for k, v in batch.items() if k != "labels"}), batch)
        for l in range(4):
            losses = []
            for g in (1 + eps, 1 - eps):
                gate = torch.ones(4, 1, dtype=torch.float64)
                gate[l] = g
                with layer_gating(model, gate):
                    losses.append(ce(model(input_values=batch["input_values"]), batch))
            fd = ((losses[0] - losses[1]) / (2 * eps)).abs().mean()  # per-sample |dL/dg|, averaged
            assert float(taylor[l, 0]) == pytest.approx(float(fd), rel=1e-4, abs=1e-9)
            gone = remove_layers_(copy.deepcopy(model), [l])
            expected = (ce(gone(input_values=batch["input_values"]), batch) - base).mean()
            assert float(occlusion[l, 0]) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


def test_an_empty_layer_is_removed_only_where_that_is_exact():
    for stable, expect in ((True, [1]), (False, [])):
        model = _model("wav2vec2-tiny", do_stable_layer_norm=stable)
        block = encoder_layers(model)[1]
        with torch.no_grad():  # zero output biases: a pre-LN layer without heads and neurons is then h exactly
            block.attention.out_proj.bias.zero_()
            block.feed_forward.output_dense.bias.zero_()
        plan = PruningPlan(4, 4, {1: (0, 1, 2, 3)}, pruned_ffn={1: tuple(range(64))}, intermediate_size=64)
        inputs = _inputs(model)
        with torch.no_grad():
            gated = evaluate_gated(model, plan, lambda m: m(**inputs).logits)
            pruned = remove_all_(copy.deepcopy(model), plan)
            torch.testing.assert_close(pruned(**inputs).logits, gated, atol=1e-6, rtol=1e-6)
        assert history_of(pruned).pruned_layers == tuple(expect), stable
        assert drop_empty_layers_(pruned) == []


def test_the_removal_order_prices_layers_exactly_with_heads_and_neurons_of_the_same_layers():
    model = _model("wav2vec2-tiny")
    gen = torch.Generator().manual_seed(0)
    scores = {kind: torch.rand(*KINDS[kind].grid(model), generator=gen) for kind in ("heads", "ffn", "layers")}
    order = removal_order(model, scores, min_per_layer={"ffn": 0})
    inputs = example_inputs(model)
    assert {tag for tag, *_ in order.units} == {"head", "ffn", "layer"}
    costs = layer_macs(model, inputs).costs
    for count in range(0, len(order.units) + 1, 7):
        plan = order.plan_at(count)
        pruned = remove_all_(copy.deepcopy(model), plan)
        assert order.macs_at(count) == count_macs(pruned, example_inputs(pruned))["total"], count
        for layer in plan.pruned_layers:
            assert layer not in plan.pruned_heads and layer not in plan.pruned_ffn  # the layer took them
    whole = copy.deepcopy(model)
    remove_layers_(whole, [0])
    assert costs[0] == count_macs(model, inputs)["total"] - count_macs(whole, inputs)["total"]


def test_select_layers_counts_what_the_plan_removed_and_checks_its_input():
    scores = torch.tensor([[3.0], [1.0], [2.0], [0.5]])
    assert select_layers(scores, PruningPlan(4, 2), ratio=0.5).pruned_layers == (1, 3)
    assert select_layers(scores, PruningPlan(4, 2, pruned_layers=(0,)), ratio=0.5).pruned_layers == (0, 3)
    with pytest.raises(InputError, match="score this model's layers"):
        select_layers(torch.zeros(4, 2), PruningPlan(4, 2), ratio=0.5)
    with pytest.raises(InputError, match="pruned_layers"):
        PruningPlan.from_json({"format": "prunehead.plan", "num_layers": 4, "num_heads": 2, "pruned_layers": [4]})


def test_layer_paths_run_on_the_meta_device():
    model = _model("wav2vec2-tiny").to("meta")
    inputs = {k: v.to("meta") for k, v in example_inputs(model, 1.0).items()}
    plan = PruningPlan(4, 4, {0: (1,)}, pruned_layers=(2,))
    with torch.no_grad():
        evaluate_gated(model, plan, lambda m: m(**inputs).logits)
    layer_macs(model, inputs)
    remove_all_(model, plan)
    assert len(encoder_layers(model)) == 3 and next(model.parameters()).device.type == "meta"


def test_cli_score_prune_eval_repair_and_export_of_layers(dead_heads, tmp_path):
    root = dead_heads
    cli_ok("score", "-m", root / "model", "-d", root / "data", "--units", "layers", "--scorer", "occlusion",
         "--samples", "6", "--out", tmp_path / "layers.json")
    scores = load_scores(tmp_path / "layers.json", expect=(2, 1), units="layers")
    out = tmp_path / "pruned"
    output = cli_ok("prune", "-m", root / "model", "-d", root / "data", "--layer-ratio", "0.5", "--layer-scores",
                  tmp_path / "layers.json", "--ratio", "0.25", "--scores", root / "gradient.json",
                  "--repair", "lsq", "--repair-samples", "6", "--batch-size", "8", "--out", out)
    gone = int(scores[:, 0].argmin())
    assert f"plan: remove 1 of 2 encoder layers [{gone}]" in output
    plan = prunehead.PruningPlan.load(out / "plan.json")
    assert plan.pruned_layers == (gone,) and plan.num_layers == 2
    report = json.loads((out / "report.json").read_text())
    assert report["layers"]["layers_removed"] == 1
    assert all(row["layer"] != gone for row in report["repair"]["projections"])
    check_saved_folder(out, root / "data", "metrics_after_repair", tmp_path / "onnx")


def test_cli_budgets_span_layers(dead_heads, tmp_path):
    root = dead_heads
    out = tmp_path / "macs"
    output = cli_ok("prune", "-m", root / "model", "-d", root / "data", "--scores", root / "gradient.json",
                  "--target-macs", "0.95", "--units", "heads,layers", "--layer-scorer", "occlusion", "--samples", "6",
                  "--batch-size", "8", "--out", out)
    report = json.loads((out / "report.json").read_text())
    info = report["target_macs"]
    assert info["planned_macs"] == report["after"]["macs"] and "layer_macs" in info, output
    fresh = prunehead.evaluate(str(out), str(root / "data"), split="test")
    assert fresh["accuracy"] == report["metrics_after"]["accuracy"]


def test_layer_flags_fail_in_one_line_before_loading(tmp_path):
    for args, message in (
            (["--layer-ratio", "0.5"], "--layer-ratio needs scores of the whole layers"),
            (["--layer-ratio", "0.5", "--layer-scorer", "magnitude", "-d", "x"], "--layer-scorer must be one of"),
            (["--layer-scores", str(tmp_path / "s.json"), "--ratio", "0.2", "--scores", str(tmp_path / "h.json")],
             "--layer-scores ranks whole layers"),
            (["--layer-ratio", "0.5", "--layer-scores", str(tmp_path / "s.json"), "--ratio", "0.2", "--scorer",
              "gradient", "--rounds", "2", "-d", "x"], "drop --rounds")):
        result = runner.invoke(app, ["prune", "-m", str(tmp_path / "m"), "--out", str(tmp_path / "o"), *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)


def test_sweep_frontier_spans_layers_and_matches_a_physical_prune(dead_heads, tmp_path):
    root = dead_heads
    cli_ok("sweep", "-m", root / "model", "-d", root / "data", "-s", root / "gradient.json", "--ratios", "0,0.5",
         "--ffn-ratios", "0", "--layer-ratios", "0,0.5", "--layer-scorer", "occlusion", "--batch-size", "8",
         "--out", tmp_path / "frontier")
    result = json.loads((tmp_path / "frontier" / "frontier.json").read_text())
    assert result["layer_scorer"] == "occlusion"
    point = next(p for p in result["points"] if p["head_ratio"] == 0.5 and p["layer_ratio"] == 0.5)
    assert point["layers_removed"] == 1
    assert "layer ratio" in (tmp_path / "frontier" / "frontier.md").read_text()
    model = prunehead.load(root / "model")
    dense = count_macs(model, example_inputs(model))["total"]
    ws_scores = load_scores(root / "gradient.json")
    from prunehead.pruning.plan import select

    plan = select(ws_scores, ratio=0.5, scope="global")
    matched = None  # the layer the sweep removed: the one whose physical removal gives the reported MACs
    for layer in (0, 1):
        pruned = remove_all_(copy.deepcopy(model), PruningPlan(2, 4, plan.pruned_heads, pruned_layers=(layer,)))
        if count_macs(pruned, example_inputs(pruned))["total"] == point["macs"]:
            matched = layer
    assert matched is not None and point["mac_fraction"] == pytest.approx(point["macs"] / dense)


def test_shares_of_heads_and_neurons_are_of_the_layers_that_stay():
    """Known answers on a 4 x 4 grid whose layers 1 and 3 go and hold the lowest scores: the heads and neurons
    of removed layers are neither chosen nor counted (as when the layers are removed first)."""
    from prunehead.units.base import Amount
    from prunehead.units.kinds import select_kept

    plan = PruningPlan(4, 4, pruned_layers=(1, 3))
    scores = torch.tensor([[13., 10, 15, 11], [0, 1, 2, 3], [12, 17, 14, 16], [4, 5, 6, 7]])
    heads = select_kept("heads", scores, plan, Amount(0.5, scope="global"))  # 4 of the 8 heads that stay
    assert heads.pruned_heads == {0: (0, 1, 3), 2: (0,)} and heads.pruned_layers == (1, 3)
    heads = select_kept("heads", scores, plan, Amount(0.5, scope="per_layer"))
    assert heads.pruned_heads == {0: (1, 3), 2: (0, 2)}
    neurons = select_kept("ffn", scores, plan, Amount(0.25, scope="global", min_per_layer=1))  # 2 of 8
    assert neurons.pruned_ffn == {0: (1, 3)} and neurons.intermediate_size == 4
    assert select_kept("heads", scores, PruningPlan(4, 4), Amount(0.25)).pruned_heads == {1: (0, 1, 2, 3)}


def test_a_cut_of_layers_and_heads_equals_layers_first_then_heads(dead_heads):
    """prunehead.prune with --layer-ratio and --ratio == removing the layer, then cutting the heads of the model
    that is left by the same share (independent: two calls, the second on the pruned model)."""
    from prunehead.pruning.targets import Cut
    from prunehead.units.base import Amount

    model = prunehead.load(str(dead_heads / "model"))
    heads = torch.tensor([[5., 6, 7, 8], [1, 2, 3, 4]])  # the removed layer (1) holds the lowest scores
    layers = torch.tensor([[1.0], [0.0]])
    both = prunehead.prune(model, Cut({"heads": Amount(0.5), "layers": Amount(0.5)}),
                           ranking={"heads": heads, "layers": layers}, dry_run=True).plan
    first = prunehead.prune(model, Cut({"layers": Amount(0.5)}), ranking={"layers": layers}).model
    then = prunehead.prune(first, Cut.heads(0.5), ranking=heads[:1], dry_run=True).plan
    assert both.pruned_layers == (1,) and both.pruned_heads == {0: (0, 1)} == then.pruned_heads
