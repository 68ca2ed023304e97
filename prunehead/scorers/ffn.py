"""FFN neuron importance: an (L, I) matrix over every layer's intermediate neurons, higher = more important.

* `taylor`: first-order Taylor / gradient x activation (Molchanov et al. 2017, "Pruning convolutional
  neural networks for resource efficient inference"), the per-neuron analogue of Michel et al.'s head gates:
  each sample gets its own all-ones gate g (B, L, I) on the intermediate activations a, and its importance
  is |dL_b/dg_b,i| = |sum_t a_t,i dL_b/da_t,i|, averaged over samples. One backward of the summed
  per-sample loss gives every sample's gradient exactly. Cost: 1 forward + 1 backward per sample.
* `magnitude`: data-free, the L2 norm of neuron i's weights: its intermediate row and output column
  together, sqrt(||W_in[i, :]||^2 + ||W_out[:, i]||^2). Cost: no forward pass.

With `normalize_layers` (default, Molchanov et al. Sec. 2.2) each layer's row is divided by its L2 norm, so
a global ranking compares layers on one scale. Neurons a pruned model no longer has score just below its
lowest remaining neuron, so cumulative ratios keep working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..units.ffn import ffn_sites, kept_neurons, neuron_gating
from .base import (Batch, Objective, batch_size, check_batches, check_loss, forward, model_device, prepared,
                   sample_batches, to_device)

SCORERS = ("taylor", "magnitude")
METHODS = SCORERS  # the name before 0.3

__all__ = ["METHODS", "SCORERS", "score_ffn"]


def score_ffn(model: nn.Module, batches: Iterable[Batch] = (), objective: Objective | None = None,
              scorer: str = "taylor", normalize_layers: bool = True) -> torch.Tensor:
    """(L, I) float64 importance of every FFN neuron of `model` (arguments as `prunehead.scorers.base`).

    `batches` and `objective` are needed for `taylor` only. The model's mode and parameters' `requires_grad`
    are restored on return.
    """
    return score_parts(model, batches, objective, scorer, noun="FFN", taylor=_taylor, magnitude=_magnitude,
                       kept=kept_neurons, normalize_layers=normalize_layers)


def score_parts(model: nn.Module, batches: Iterable[Batch], objective: Objective | None, scorer: str, *, noun: str,
                taylor: Callable, magnitude: Callable, kept: Callable[[nn.Module], list[list[int]]],
                normalize_layers: bool) -> torch.Tensor:
    """The taylor / magnitude scoring of one kind of parts (FFN neurons, conv channels): checks, the model
    prepared and restored, `taylor(model, batches, objective)` or `magnitude(model)`, then `finish_scores`."""
    if scorer not in SCORERS:
        raise InputError(f"unknown {noun} scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    if scorer == "taylor":
        batches = check_batches(batches, True)
        if objective is None:
            raise InputError(f"the taylor {noun} scorer needs an objective (per-sample loss); or use magnitude")
    with prepared(model):
        raw = taylor(model, batches, objective) if scorer == "taylor" else magnitude(model)
    return finish_scores(raw, kept(model), normalize_layers)


def _taylor(model: nn.Module, batches: list[Batch], objective: Objective) -> torch.Tensor:
    """(L, I) mean over samples of |dL_b/dg_b| (neurons a pruned model lacks get exactly 0 here)."""
    sites = ffn_sites(model)
    return gate_taylor(model, batches, objective, (len(sites), sites[0].intermediate_size), neuron_gating)


def gate_taylor(model: nn.Module, batches: list[Batch], objective: Objective, grid: tuple[int, int],
                gating: Callable[[nn.Module, torch.Tensor], Any]) -> torch.Tensor:
    """(L, W) mean over samples of |dL_b/dg_b| for an all-ones per-sample gate (B, L, W) applied by
    `gating(model, gate)` (a context manager). One backward of the summed per-sample loss per batch."""
    total, count = torch.zeros(*grid, dtype=torch.float64), 0
    for batch, _ in sample_batches(model, [to_device(b, model_device(model)) for b in batches]):
        B = batch_size(batch)
        gate = torch.ones(B, *grid, device=model_device(model), requires_grad=True)
        with torch.enable_grad(), gating(model, gate):
            loss = check_loss(objective(forward(model, batch), batch), B)
            (grad,) = torch.autograd.grad(loss.sum(), gate)  # (B, L, W)
        total += grad.abs().double().sum(0).cpu()
        count += B
    return total / count


def _magnitude(model: nn.Module) -> torch.Tensor:
    """(L, I) sqrt(||W_in[i, :]||^2 + ||W_out[:, i]||^2) on the original grid (0 where removed)."""
    sites = ffn_sites(model)
    grid = torch.zeros(len(sites), sites[0].intermediate_size, dtype=torch.float64)
    for site, ids in zip(sites, kept_neurons(model, sites)):
        rows = site.intermediate.weight.detach().double().pow(2).sum(1)  # (I_l,)
        cols = site.output.weight.detach().double().pow(2).sum(0)  # (I_l,)
        grid[site.layer, ids] = (rows + cols).sqrt().cpu()
    return grid


def finish_scores(raw: torch.Tensor, kept_ids: list[list[int]], normalize_layers: bool) -> torch.Tensor:
    """Layer-normalize the kept units' scores (`kept_ids` per layer) and put the removed ones just below the
    lowest kept one."""
    kept = torch.zeros_like(raw, dtype=torch.bool)
    for layer, ids in enumerate(kept_ids):
        kept[layer, ids] = True
    scores = raw.clone()
    if normalize_layers:
        scores = scores / (scores.norm(dim=1, keepdim=True) + 1e-20)
    if (~kept).any():
        scores[~kept] = (scores[kept].min() if kept.any() else scores.new_zeros(())) - 1.0
    if not torch.isfinite(scores).all():
        raise RuntimeError("scoring produced NaN or inf; check the objective on these batches")
    return scores
