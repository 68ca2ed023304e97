"""WavLM, the family outside transformers' attention interface: its gated relative position bias is made in
layer 0 and shared by all layers, so uneven pruning (layer 0 included) must slice it per layer."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

import prunehead
from prunehead import head_adapter, load, plan_of, prune_, save_pretrained
from prunehead.control import controlled
from prunehead.cost import count_macs, count_params
from prunehead.export.onnx import check_onnx, export_onnx, signature
from prunehead.families import family_of
from prunehead.families.wavlm import WavLMEmptyAttention, WavLMFamily, WavLMHeadAttention
from prunehead.pruning.plan import PruningPlan
from prunehead.scorers import available, get_scorer
from prunehead.scorers.layers import select_rows
from tests.conftest import TONE_LABELS, ce, logits, tiny
from tests.test_hib import run_hib

FAST = {"hib": {"steps": 3}, "attattr": {"points": 4}}
# 3 layers x 4 heads; every plan touches layer 0, whose bias table all later layers need.
PLANS = {
    "uneven": {0: (1, 3), 1: (0,), 2: (0, 2, 3)},
    "layer0_emptied": {0: (0, 1, 2, 3), 1: (2,), 2: (1, 3)},
    "layer0_one_head_left": {0: (0, 1, 3), 2: (0, 1, 2, 3)},
}


def wavlm(layers: int = 3, **overrides) -> torch.nn.Module:
    """A wavlm-tiny classifier (eval mode) with every parameter perturbed (fresh gate constants are all 1,
    biases 0) and attention dropout configured, as in real checkpoints (eval mode must switch it off)."""
    model = tiny("wavlm-tiny", num_hidden_layers=layers, **{"attention_dropout": 0.1, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def padded_batch(n: int = 3, samples: int = 6000, keep: int = 3700, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, samples, dtype=torch.long)
    mask[-1, keep:] = 0
    return {"input_values": torch.randn(n, samples, generator=g) * mask, "attention_mask": mask}



def saved_wavlm(root) -> tuple[str, str]:
    """(model dir, audiofolder): a 3-layer wavlm-tiny with the 3 tone labels, 4 train and 3 test clips a label."""
    import numpy as np
    import soundfile as sf
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(0)
    for split, n in {"train": 12, "test": 9}.items():
        for i in range(n):
            label = TONE_LABELS[i % 3]
            (root / "data" / split / label).mkdir(parents=True, exist_ok=True)
            wave = np.sin(np.arange(6000 + 300 * i) * 0.05 * (1 + i % 3)) + 0.3 * rng.standard_normal(6000 + 300 * i)
            sf.write(root / "data" / split / label / f"{i}.wav", wave.astype(np.float32), 16000)
    model = wavlm(id2label=dict(enumerate(TONE_LABELS)), label2id={n: i for i, n in enumerate(TONE_LABELS)})
    model.save_pretrained(root / "model")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "model")
    return str(root / "model"), str(root / "data")


def test_library_score_prune_evaluate(tmp_path):
    """The application layer on WavLM: score a saved model, prune it by a plan that empties layer 0,
    evaluate it; the report's metrics are evaluate's."""
    model, data = saved_wavlm(tmp_path)
    result = prunehead.score(model, data, prunehead.Ranking("gradient", samples=6))
    assert result.scores.shape == (3, 4) and torch.isfinite(result.scores).all()
    plan = PruningPlan(3, 4, PLANS["layer0_emptied"])
    pruned = prunehead.prune(model, prunehead.SavedPlan(plan), data=prunehead.Data(data, split="test"))
    assert plan_of(pruned.model) == plan and pruned.report["after"]["heads_per_layer"] == [0, 3, 2]
    assert prunehead.evaluate(pruned.model, data, split="test") == pruned.report["metrics_after"]


def test_family_and_sites():
    model = wavlm()
    adapter = head_adapter(model)
    assert isinstance(family_of(model), WavLMFamily)
    assert (adapter.num_layers, adapter.num_heads, adapter.head_dim) == (3, 4, 8)
    assert all(type(site.module) is WavLMAttention for site in adapter.sites)  # untouched outside controlled()


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_head_attention_equals_wavlm_attention(layer, masked):
    """The swapped-in block computes WavLMAttention's function: output and the bias handed on."""
    model = wavlm()
    original = model.wavlm.encoder.layers[layer].attention
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 9, 32, generator=g)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3]) if masked else None
    bias = None if layer == 0 else torch.randn(2 * 4, 9, 9, generator=g)  # (B*H, T, T) from layer 0
    with torch.no_grad():
        expected, _, expected_bias = original(hidden, attention_mask=mask, position_bias=bias)
        ours = WavLMHeadAttention(original)
        got, probs, got_bias = ours(hidden, attention_mask=mask, position_bias=bias)  # SDPA delegate
        with controlled(model) as ctl, ctl.recording({layer: lambda p, m: p}) as store:
            active = model.wavlm.encoder.layers[layer].attention(hidden, attention_mask=mask, position_bias=bias)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(active, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_bias, expected_bias, atol=0, rtol=0)
    assert store[layer].shape == (2, 4, 9, 9) and probs is None
    assert model.wavlm.encoder.layers[layer].attention is original  # routed() restored the block


def test_recorders_and_replacements_see_only_the_padding_mask():
    """HIB's A_r replaces the scores: the position bias must not reach it as part of the mask."""
    model = wavlm()
    batch = padded_batch()
    seen = {}
    plain = logits(model, batch)
    with torch.no_grad(), controlled(model) as ctl, ctl.replacing(
            {1: lambda p, v, m: (seen.setdefault("m", m), (torch.matmul(p, v), p))[1]}):
        same = model(**batch).logits
    mask = seen["m"]
    frames = mask.shape[-1]
    assert mask.shape == (3, 1, frames, frames)
    assert set(mask.unique().tolist()) == {0.0, torch.finfo(mask.dtype).min}
    assert (mask[:2] == 0).all() and (mask[2, 0, :, -1] < 0).all() and (mask[2, 0, :, 0] == 0).all()
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)  # probs already carry the bias


@pytest.mark.parametrize("plan_name", PLANS)
def test_gated_equals_pruned_and_reloads(plan_name, tmp_path):
    model = wavlm()
    plan = PruningPlan(3, 4, PLANS[plan_name])
    batch = padded_batch()
    with torch.no_grad(), controlled(model) as ctl, ctl.gating(plan.keep_mask()):
        gated = model(**batch).logits
    pruned = prune_(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, batch), gated, atol=1e-5, rtol=0)
    assert (gated - logits(model, batch)).abs().max() > 1e-3  # the plan changes the outputs
    kept = head_adapter(pruned).kept_heads(pruned)
    assert head_adapter(pruned).heads_per_layer(pruned) == [4 - len(PLANS[plan_name].get(l, ())) for l in range(3)]
    for layer, attention in enumerate(pruned.wavlm.encoder.layers):
        attention = attention.attention
        if isinstance(attention, WavLMHeadAttention):
            assert attention.heads == kept[layer] and attention.gru_rel_pos_const.shape == (1, len(kept[layer]), 1, 1)
        assert hasattr(attention, "rel_attn_embed") == (layer == 0)
    assert pruned.wavlm.encoder.layers[0].attention.rel_attn_embed.weight.shape[1] == 4  # all original heads
    save_pretrained(pruned, tmp_path / "m")
    reloaded = load(tmp_path / "m")
    assert plan_of(reloaded) == plan
    torch.testing.assert_close(logits(reloaded, batch), logits(pruned, batch), atol=0, rtol=0)


@pytest.mark.parametrize("overrides", [{"do_stable_layer_norm": True}, {"task": "asr", "vocab_size": 12}])
def test_variants_gated_equal_pruned_and_run_from_any_layer(overrides):
    """Stable-layer-norm encoder (final norm after the layers) and the CTC head."""
    model = wavlm(**overrides)
    plan = PruningPlan(3, 4, PLANS["layer0_emptied"])
    batch = padded_batch()
    with torch.no_grad(), controlled(model) as ctl, ctl.gating(plan.keep_mask()):
        gated = model(**batch).logits
    pruned = prune_(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, batch), gated, atol=1e-5, rtol=0)
    runner = family_of(pruned).runner(pruned)
    expected = logits(pruned, batch)
    with torch.no_grad():
        with controlled(pruned), runner.capturing() as captured:
            pruned(**batch)
        for start in (1, 2):  # row 0 enters at layer 0, rows 1 and 2 at `start`: 1 row, then 3
            entering = [None] * 3
            entering[0], entering[start] = captured[0][0][:1], captured[start][0][1:]
            extras = [select_rows(captured[j][1], torch.arange(1 if j < start else 3), 3) for j in range(3)]
            with runner.head_from(runner.run_layers(entering, extras)):
                got = pruned(**batch).logits
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_params_and_macs_drop_by_the_removed_heads():
    """Known answer: a removed head takes 4 d D + 3 d projection weights and its gate constant, and on T frames
    4 T d D projection MACs, 8 T d gate MACs and 2 T T d attention MACs."""
    model = wavlm()
    D, d = 32, 8
    inputs = {"input_values": torch.randn(1, 16000)}
    frames = model._get_feat_extract_output_lengths(16000)
    before_p, before = count_params(model), count_macs(model, inputs)
    prune_(model, PruningPlan(3, 4, {0: (0, 2, 3), 1: (1,), 2: (2,)}))
    after_p, after = count_params(model), count_macs(model, inputs)
    k = 5
    assert before_p - after_p == k * (4 * d * D + 3 * d + 1)
    # the per-head gate linear runs as a batched matmul on the full grid (counted with attention by the
    # op-level counter) and as addmm on a pruned one: compare linear + attention, which is exact either way
    dropped = (before["linear"] + before["attention"]) - (after["linear"] + after["attention"])
    assert dropped == k * (4 * frames * d * D + 8 * frames * d + 2 * frames * frames * d)
    assert before["conv"] == after["conv"]


def test_pruned_padded_sample_equals_the_sample_alone():
    """Independent truth for the mask: a layer-norm front end makes padding with a mask exact."""
    pruned = prune_(wavlm(), PruningPlan(3, 4, PLANS["layer0_emptied"]))
    batch = padded_batch(keep=3700)
    alone = {k: v[-1:, :3700] for k, v in batch.items()}
    torch.testing.assert_close(logits(pruned, batch)[-1:], logits(pruned, alone), atol=1e-5, rtol=0)


def test_emptied_layer0_still_hands_on_the_bias():
    model = wavlm()
    original = model.wavlm.encoder.layers[0].attention
    hidden = torch.randn(2, 7, 32)
    with torch.no_grad():
        _, _, expected = original(hidden)
        prune_(model, PruningPlan(3, 4, {0: (0, 1, 2, 3)}))
        empty = model.wavlm.encoder.layers[0].attention
        out, _, bias = empty(hidden)
    assert isinstance(empty, WavLMEmptyAttention)
    torch.testing.assert_close(bias, expected, atol=0, rtol=0)  # (B*H, T, T) for all 4 original heads
    torch.testing.assert_close(out, original.out_proj.bias.expand(2, 7, 32))


def test_incremental_pruning_equals_one_shot():
    model = wavlm()
    first, second = PruningPlan(3, 4, {0: (1,), 1: (0, 2)}), PruningPlan(3, 4, {0: (3,), 1: (2, 3), 2: (0,)})
    stepwise = prune_(prune_(copy.deepcopy(model), first), second)
    oneshot = prune_(copy.deepcopy(model), first.union(second))
    batch = padded_batch()
    torch.testing.assert_close(logits(stepwise, batch), logits(oneshot, batch), atol=1e-6, rtol=0)
    assert stepwise.wavlm.encoder.layers[0].attention.heads == [0, 2]


def test_pruned_model_trains_every_parameter():
    """Fine-tuning after pruning: every parameter, layer 0's bias table behind an emptied layer 0 included,
    gets a gradient (the table feeds the later layers)."""
    model = prune_(wavlm(), PruningPlan(3, 4, PLANS["layer0_emptied"])).train()
    batch = {**padded_batch(2, 4000, 3000), "labels": torch.tensor([1, 0])}
    model(**batch).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [] and "wavlm.encoder.layers.0.attention.rel_attn_embed.weight" in dict(model.named_parameters())


@pytest.mark.parametrize("pruned", [{}, {0: (0, 1, 2, 3), 2: (1,)}])
@pytest.mark.parametrize("name", available())
def test_every_scorer_runs(name, pruned):
    """Shape, finite values, and removed heads (a whole layer 0 included) just below every remaining head."""
    model = prune_(wavlm(), PruningPlan(3, 4, pruned)) if pruned else wavlm()
    batch = {**padded_batch(2, 4000, 3000), "labels": torch.tensor([0, 2])}
    scores = get_scorer(name, **FAST.get(name, {})).score(model, [batch], ce)
    assert scores.shape == (3, 4) and torch.isfinite(scores).all()
    removed = torch.zeros(3, 4, dtype=torch.bool)
    for layer, heads in pruned.items():
        removed[layer, list(heads)] = True
    if pruned:
        assert scores[removed].max() < scores[~removed].min()
    else:  # routed() gave every block back
        assert all(type(layer.attention) is WavLMAttention for layer in model.wavlm.encoder.layers)


@pytest.mark.parametrize("pruned", [{}, {0: (1, 2), 1: (0, 1, 2, 3)}])
def test_cached_hib_follows_the_plain_loop(pruned):
    """Staggered rows from cached layer inputs get the (row-independent) position bias for the rows present."""
    model = prune_(wavlm(), PruningPlan(3, 4, pruned)) if pruned else wavlm()
    batch = {**padded_batch(2, 4000, 3000), "labels": torch.tensor([1, 0])}
    plain, plain_trace = run_hib(model, [batch], steps=3, batched=False, cache=False)
    fast, fast_trace = run_hib(model, [batch], steps=3)
    assert fast_trace.max_diff(plain_trace) < 1e-4
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0, equal_nan=True)  # NaN: removed heads


@pytest.mark.parametrize("plan", [PLANS["layer0_emptied"], pytest.param(PLANS["uneven"], marks=pytest.mark.slow)])
def test_onnx_export_matches_onnxruntime(tmp_path, plan):
    model = prune_(wavlm(num_labels=5), PruningPlan(3, 4, plan))
    sig = export_onnx(model, tmp_path / "m.onnx")
    assert sig.input_names == ("input_values", "attention_mask")
    result = check_onnx(model, tmp_path / "m.onnx", sig, atol=1e-4)  # padded batches at unseen lengths
    assert result.agreement == 1.0 and len(result.shapes) == 3
    assert all(type(layer.attention) is not WavLMHeadAttention or not layer.attention.eager
               for layer in model.wavlm.encoder.layers)  # exportable() restored the blocks


@pytest.mark.slow
def test_unpruned_onnx_export_matches_onnxruntime(tmp_path):
    model = wavlm(layers=2)
    sig = export_onnx(model, tmp_path / "m.onnx")
    check_onnx(model, tmp_path / "m.onnx", sig, atol=1e-4)
    assert all(type(layer.attention) is WavLMAttention for layer in model.wavlm.encoder.layers)
    assert signature(model).input_names == ("input_values", "attention_mask")
