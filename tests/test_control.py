"""The controlled attention function: identical to eager when idle, and each feature does what it says."""

from __future__ import annotations

import pytest
import torch

from prunehead.control import controlled, is_controlled
from tests.conftest import FAMILIES, inputs_for, logits, tiny



@pytest.mark.parametrize("arch", FAMILIES)
def test_idle_and_active_paths_equal_eager(arch):
    model = tiny(arch)
    inputs = inputs_for(arch)
    model.set_attn_implementation("eager")
    eager = logits(model, inputs)
    with controlled(model) as ctl:
        idle = logits(model, inputs)  # delegates to SDPA
        with ctl.recording({0: lambda p, m: p.sum()}):  # forces prunehead's own eager path in layer 0
            active = logits(model, inputs)
    torch.testing.assert_close(idle, eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(active, eager, atol=1e-5, rtol=0)


def _padded_batch():
    g = torch.Generator().manual_seed(1)
    long, short = torch.randn(8000, generator=g), torch.randn(5000, generator=g)
    values = torch.zeros(2, 8000)
    values[0], values[1, :5000] = long, short
    mask = torch.zeros(2, 8000, dtype=torch.long)
    mask[0], mask[1, :5000] = 1, 1
    return values, mask, short


@pytest.mark.parametrize("active", [False, True])
def test_padding_mask_arrives_and_changes_nothing_for_valid_frames(active):
    model = tiny("wav2vec2-tiny")  # feat_extract_norm="layer": padding-invariant when the mask arrives
    values, mask, short = _padded_batch()
    seen = []
    with torch.no_grad(), controlled(model) as ctl:
        reducers = {l: (lambda p, m: seen.append(m is not None)) for l in range(2)} if active else {}
        with ctl.recording(reducers):
            batch = model.wav2vec2(values, attention_mask=mask).last_hidden_state
            alone = model.wav2vec2(short[None]).last_hidden_state
    frames = alone.shape[1]
    torch.testing.assert_close(batch[1, :frames], alone[0], atol=1e-5, rtol=0)
    if active:
        assert seen[:2] == [True, True]  # the padded forward gave every layer a mask


def test_without_mask_registration_padding_would_leak():
    """The reference check above can fail: ignoring the mask changes the valid frames."""
    model = tiny("wav2vec2-tiny")
    values, mask, short = _padded_batch()
    with torch.no_grad():
        unmasked = model.wav2vec2(values).last_hidden_state
        alone = model.wav2vec2(short[None]).last_hidden_state
    assert (unmasked[1, : alone.shape[1]] - alone[0]).abs().max() > 1e-3


def test_gate_ones_is_identity_and_per_sample_gate_equals_separate_runs():
    model = tiny("wav2vec2-tiny")
    inputs = inputs_for("wav2vec2-tiny")
    plain = logits(model, inputs)
    gate = torch.tensor([[[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]],
                         [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]]])  # (B, L, H)
    with controlled(model) as ctl:
        with ctl.gating(torch.ones(2, 4)):
            ones = logits(model, inputs)
        with ctl.gating(gate):
            batched = logits(model, inputs)
        separate = []
        for b in range(2):
            with ctl.gating(gate[b]):
                separate.append(logits(model, {"input_values": inputs["input_values"][b : b + 1]}))
    torch.testing.assert_close(ones, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, torch.cat(separate), atol=1e-5, rtol=0)
    assert (batched - plain).abs().max() > 1e-4


def test_replacement_and_scaling():
    model = tiny("wav2vec2-tiny")
    inputs = inputs_for("wav2vec2-tiny")
    plain = logits(model, inputs)
    with controlled(model) as ctl:
        with ctl.replacing({1: lambda p, v, m: (torch.matmul(p, v), p)}):
            same = logits(model, inputs)
        diagonal = lambda p, v, m: (torch.matmul(torch.eye(p.shape[-1]).expand_as(p), v), p)  # noqa: E731
        with ctl.replacing({1: diagonal}):
            changed = logits(model, inputs)
        with ctl.scaling(0, torch.ones(2)) as scale:
            scaled = model(**inputs).logits
            scaled.sum().backward()
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=0)
    assert (changed - plain).abs().max() > 1e-5
    torch.testing.assert_close(scaled.detach(), plain, atol=1e-5, rtol=0)
    assert scale.leaf.shape == (2, 4, 12, 12) and scale.leaf.grad.abs().sum() > 0  # a true leaf gets .grad


def test_controlled_restores_on_error():
    model = tiny("whisper-encoder-tiny")
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError), controlled(model) as ctl, ctl.gating(torch.zeros(2, 4)):
        assert is_controlled(model)
        raise RuntimeError("boom")
    assert model.config._attn_implementation == before and not is_controlled(model)
