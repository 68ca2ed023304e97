"""HIB: IB loss reference values, the forward identity, Pearson cropping, and every speed-up vs the plain loop."""

from __future__ import annotations

import math

import pytest
import torch

from prunehead.architectures import build_model
from prunehead.control import controlled
from prunehead.scorers.hib import HIBScorer, ValueStats, value_statistics
from prunehead.scorers.ib import ib_loss, ib_row, pearson_valid
from prunehead.scorers.layers import layer_runner, select_rows
from tests.conftest import FAMILIES, ce, inputs_for, tiny




def speech_batch(n: int = 3, samples: int = 4000, pad: dict[int, int] | None = None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, samples, dtype=torch.long)
    for row, keep in (pad or {}).items():
        mask[row, keep:] = 0
    x = torch.randn(n, samples, generator=g) * mask
    return {"input_values": x, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=g)}


# ----------------------------------------------------------------------------------------------- IB loss

@pytest.mark.parametrize("t, expected", [(0.002, 0.662840), (0.19, 0.652712), (0.5, 0.672699), (1.0, 0.761049)])
def test_paper_ib_reference_values(t, expected):
    assert ib_row(torch.tensor(t, dtype=torch.float64), d=64, lam=0.9).item() == pytest.approx(expected, abs=1e-6)


def test_paper_ib_is_isotropic_kl_over_d_plus_constant_and_mi_is_bound_minus_marginal():
    d, lam = 64, 0.9
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    s = t + lam**2
    kl_iso = d / 2 * (s - 1 - torch.log(s))
    const = (d - 1) / 2 * (lam**2 - 1 - math.log(lam**2))
    assert const == pytest.approx(0.652712, abs=1e-6)
    torch.testing.assert_close(ib_row(t, d, lam, "paper"), kl_iso / d + const)
    torch.testing.assert_close(ib_row(t, d, lam, "gaussian_mi"), ib_row(t, d, lam, "vib_upper") - kl_iso)


def test_ib_loss_averages_over_valid_frames_and_heads_only():
    g = torch.Generator().manual_seed(0)
    P = torch.randn(1, 2, 5, 5, generator=g).softmax(-1)
    padded = torch.zeros(1, 2, 7, 7)
    padded[:, :, :5, :5] = P
    padded[:, :, 5:, 0] = 1.0  # padded query rows: anything, excluded
    valid = torch.tensor([[True] * 5 + [False] * 2])
    t = (P**2).sum(-1)
    expected = ib_row(t, 16, 0.9).mean()
    torch.testing.assert_close(ib_loss(padded, valid, 16), expected.reshape(1))


# ----------------------------------------------------------------------------------------------- forward identity

def test_closed_form_equals_standardize_mix_unstandardize():
    """method.md §5.3: (P @ (V - mu)/sigma + lam eps) * sigma + mu == P @ V + lam sigma eps."""
    g = torch.Generator().manual_seed(0)
    B, H, L, d, lam = 2, 3, 6, 4, 0.9
    V = torch.randn(B, H, L, d, generator=g) * 3 + 1
    mu, sigma = torch.randn(H, d, generator=g), torch.rand(H, d, generator=g) + 0.5
    P = torch.randn(B, H, L, L, generator=g).softmax(-1)
    eps = torch.randn(B, H, L, d, generator=g)
    m, s = mu[None, :, None], sigma[None, :, None]
    standard = (P @ ((V - m) / s) + lam * eps) * s + m

    scorer = HIBScorer(noise=lam)
    stats = ValueStats([mu], [sigma], 100)
    logits = P.log()  # softmax(log P) == P
    fn = scorer._replacement(0, logits, torch.arange(B), torch.ones(B, H, dtype=torch.bool),
                             torch.ones(B, L, dtype=torch.bool), stats, eps, [], d)
    out, used = fn(torch.full((B, H, L, L), 1.0 / L), V, None)
    torch.testing.assert_close(out, standard, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(used, P)


def test_value_statistics_are_per_head_feature_std_over_valid_frames():
    model = tiny("wav2vec2-tiny")
    batch = speech_batch(3, pad={2: 2500})
    stats = value_statistics(model, [batch], min_std=0.01)
    seen = {}
    with torch.no_grad(), controlled(model) as ctl, ctl.replacing(
            {0: lambda p, v, m: (seen.setdefault("v", v), seen.setdefault("m", m), (p @ v, p))[2]}):
        model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    valid = torch.diagonal(seen["m"][:, 0], dim1=-2, dim2=-1) == 0  # (B, L)
    frames = seen["v"].transpose(1, 2)[valid]  # (n, H, d)
    torch.testing.assert_close(stats.std[0], frames.std(0).clamp_min(0.01), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats.mean[0], frames.mean(0), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- Pearson cropping

def test_pearson_is_computed_on_the_valid_block_only():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 2, 5, 5, generator=g).softmax(-1), torch.randn(1, 2, 5, 5, generator=g).softmax(-1)
    pa, pb = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    pa[..., :5, :5], pb[..., :5, :5] = a, b
    valid = torch.tensor([[True] * 5 + [False] * 3])
    cropped = pearson_valid(pa, pb, valid)
    direct = torch.stack([torch.corrcoef(torch.stack([a[0, h].flatten(), b[0, h].flatten()]))[0, 1]
                          for h in range(2)])
    torch.testing.assert_close(cropped[0].float(), direct, atol=1e-6, rtol=1e-5)
    naive = torch.corrcoef(torch.stack([pa[0, 0].flatten(), pb[0, 0].flatten()]))[0, 1]
    assert abs(naive - cropped[0, 0]) > 0.05  # padded zeros would inflate the correlation
    assert pearson_valid(torch.ones(1, 1, 3, 3), pa[:, :1, :3, :3], torch.ones(1, 3, dtype=torch.bool)).item() == 0


def test_padded_sample_scores_like_the_sample_alone():
    """method.md §5.8: the same utterance scored inside a padded batch and alone gives the same C_h."""
    model = tiny("wav2vec2-tiny")  # layer-norm front end: padding with a mask is exact
    batch = speech_batch(2, pad={1: 2600})
    alone = {"input_values": batch["input_values"][1:, :2600], "attention_mask": batch["attention_mask"][1:, :2600],
             "labels": batch["labels"][1:]}
    stats = value_statistics(model, [alone])
    scorer = HIBScorer(steps=4, stats=stats)
    _, padded = scorer.per_sample(model, [batch], ce)
    scorer_alone = HIBScorer(steps=4, stats=stats)
    # sample ids seed A_r and eps: give the lone sample the id it had in the batch
    _, single = scorer_alone.per_sample(model, [{k: torch.cat([v[:1, :2600] * 0, v]) if k != "labels" else
                                                  torch.cat([v[:1], v]) for k, v in alone.items()}], ce)
    torch.testing.assert_close(padded[1], single[1], atol=2e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- speed-ups

class Trajectories:
    """Collects every row's A_r after every step, keyed by (sample id, target, layer)."""

    def __init__(self):
        self.steps: dict[tuple, list[torch.Tensor]] = {}

    def __call__(self, rows, ids, logits):
        for layer, tensor in logits.items():
            slots = [i for i, r in enumerate(rows) if layer in r.layers]
            for k, i in enumerate(slots):
                self.steps.setdefault((int(ids[i]), rows[i].key, layer), []).append(tensor[k])

    def max_diff(self, other: Trajectories) -> float:
        assert self.steps.keys() == other.steps.keys()
        return max((torch.stack(v) - torch.stack(other.steps[k])).abs().max().item() for k, v in self.steps.items())


def run_hib(model, batches, **options):
    trace = Trajectories()
    _, results = HIBScorer(trace=trace, **options).per_sample(model, batches, ce)
    return results, trace


@pytest.fixture(scope="module")
def w2v2():
    return tiny("wav2vec2-tiny")


@pytest.mark.parametrize("batched, replicate, cache", [(True, False, False), (True, True, False),
                                                       (False, False, True), (True, True, True)])
def test_batched_paths_follow_the_plain_loop(w2v2, batched, replicate, cache):
    """method.md §5.5: sample batching, layer replication and layer caching give the plain A_r trajectories."""
    batches = [speech_batch(3, pad={2: 3000})]
    plain, plain_trace = run_hib(w2v2, batches, steps=6, batched=False, cache=False)
    fast, fast_trace = run_hib(w2v2, batches, steps=6, batched=batched, replicate_layers=replicate, cache=cache)
    assert fast_trace.max_diff(plain_trace) < 1e-4  # Adam amplifies float noise near zero gradients slightly
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("granularity", ["all_layers", "per_head"])
def test_other_granularities_batched_follow_the_plain_loop(w2v2, granularity):
    batches = [speech_batch(2)]
    plain, plain_trace = run_hib(w2v2, batches, steps=3, granularity=granularity, batched=False, cache=False)
    fast, fast_trace = run_hib(w2v2, batches, steps=3, granularity=granularity)
    assert fast_trace.max_diff(plain_trace) < 1e-4
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    assert (plain != 0).all()  # every (sample, layer, head) was scored


def test_max_rows_chunks_do_not_change_the_result(w2v2):
    batches = [speech_batch(3)]
    whole, _ = run_hib(w2v2, batches, steps=3)
    chunked, _ = run_hib(w2v2, batches, steps=3, max_rows=2)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch, overrides", [*[(a, {}) for a in FAMILIES],
                                             ("wav2vec2-tiny", {"do_stable_layer_norm": True}),
                                             ("wav2vec2-tiny", {"task": "asr", "vocab_size": 10, "add_adapter": True,
                                                                "num_adapter_layers": 1, "output_hidden_size": 32})])
def test_run_from_layer_matches_the_full_forward(arch, overrides):
    """Cached hidden state entering layer j + layers j.. + the model's own head == the plain forward."""
    torch.manual_seed(0)
    model = build_model(arch, num_labels=3, **overrides).eval()
    inputs = inputs_for(arch, batch=2)
    if "input_values" in inputs:
        inputs["attention_mask"] = torch.ones_like(inputs["input_values"], dtype=torch.long)
        inputs["attention_mask"][1, 3000:] = 0
    runner = layer_runner(model)
    assert runner is not None
    with torch.no_grad():
        expected = model(**inputs).logits
        with controlled(model), runner.capturing() as captured:
            model(**inputs)
        for start in range(len(runner.layers)):
            entering = [None] * len(runner.layers)
            entering[start] = captured[start][0]
            extras = [select_rows(captured[j][1], torch.arange(2), 2) for j in range(len(runner.layers))]
            with runner.head_from(runner.run_layers(entering, extras)):
                got = model(**inputs).logits
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not any(m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", ["whisper-encoder-tiny", "bert-tiny", "hubert-tiny"])
def test_batched_hib_matches_plain_on_other_families(arch):
    model = tiny(arch)
    batch = {**inputs_for(arch, batch=2), "labels": torch.tensor([0, 2])}
    plain, plain_trace = run_hib(model, [batch], steps=3, batched=False, cache=False)
    fast, fast_trace = run_hib(model, [batch], steps=3)
    assert fast_trace.max_diff(plain_trace) < 1e-4
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


def test_hib_is_deterministic_and_seeded(w2v2):
    batches = [speech_batch(2)]
    a, _ = run_hib(w2v2, batches, steps=3, seed=1)
    b, _ = run_hib(w2v2, batches, steps=3, seed=1)
    c, _ = run_hib(w2v2, batches, steps=3, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_zero_steps_correlates_the_random_init():
    """With T = 0 the result is Pearson(softmax(init), A_O): near zero, and A_r's init is per sample."""
    model = tiny("wav2vec2-tiny")
    _, results = HIBScorer(steps=0).per_sample(model, [speech_batch(2)], ce)
    assert results.abs().max() < 0.5
    assert not torch.equal(results[0], results[1])
