"""Encoder layer importance: an (L, 1) matrix, higher = more important (`prunehead.units.depth`).

* `taylor`: first-order Taylor on a per-sample skip gate g (B, L, 1), layer l's output h + g (layer_l(h) - h):
  |dL_b/dg_b,l| at g = 1 averaged over samples, the estimated loss change of skipping the layer (Molchanov
  et al. 2017, as for neurons and channels). Cost: 1 forward + 1 backward per sample.
* `occlusion`: the measured mean increase of the per-sample loss when layer l alone is skipped (the exact
  effect of removing it alone). Cost: L + 1 forwards per sample.

No per-layer normalization (one unit per layer). Layers the family cannot remove (WavLM's first) score just
above the highest removable one, so every ranking removes them last.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import InputError
from ..units.depth import encoder_layers, fixed_layers, layer_gating
from .base import Batch, Objective, batch_size, check_batches, check_loss, forward, model_device, prepared, \
    sample_batches, to_device
from .ffn import gate_taylor

SCORERS = ("taylor", "occlusion")

__all__ = ["SCORERS", "score_layers"]


def score_layers(model: nn.Module, batches: Iterable[Batch], objective: Objective | None,
                 scorer: str = "taylor") -> torch.Tensor:
    """(L, 1) float64 importance of every encoder layer of `model` on `batches` (a per-sample loss
    `objective`). The model's mode and parameters' `requires_grad` are restored on return."""
    if scorer not in SCORERS:
        raise InputError(f"unknown layer scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    batches = check_batches(batches, True)
    if objective is None:
        raise InputError("the layer scorers need an objective (per-sample loss)")
    L = len(encoder_layers(model))
    with prepared(model):
        raw = gate_taylor(model, batches, objective, (L, 1), layer_gating) if scorer == "taylor" \
            else _occlusion(model, batches, objective, L)
    fixed = sorted(fixed_layers(model))
    if fixed:
        free = [l for l in range(L) if l not in fixed]
        raw[fixed] = (raw[free].max() if free else raw.new_zeros(())) + 1.0
    if not torch.isfinite(raw).all():
        raise RuntimeError("scoring produced NaN or inf; check the objective on these batches")
    return raw


def _occlusion(model: nn.Module, batches: list[Batch], objective: Objective, L: int) -> torch.Tensor:
    """(L, 1) mean over samples of loss(layer l skipped) - loss(full)."""
    device = model_device(model)
    total, count = torch.zeros(L, 1, dtype=torch.float64), 0
    with torch.no_grad():
        for batch, _ in sample_batches(model, [to_device(b, device) for b in batches]):
            B = batch_size(batch)
            base = check_loss(objective(forward(model, batch), batch), B).double()  # (B,)
            for l in range(L):
                gate = torch.ones(L, 1, device=device)
                gate[l] = 0.0
                with layer_gating(model, gate):
                    loss = check_loss(objective(forward(model, batch), batch), B).double()
                total[l, 0] += (loss - base).sum().cpu()
            count += B
    return total / count
