"""Conv channel importance: a (C, W) matrix over the output channels of the front end's C convolutions.

* `taylor`: first-order Taylor (Molchanov et al. 2017), as for FFN neurons: each sample gets an all-ones
  gate g (B, C, W) where the channels are read (`prunehead.units.conv.channel_gating`), and a channel's
  importance is |dL_b/dg_b,c| averaged over samples. Cost: 1 forward + 1 backward per sample.
* `magnitude`: data-free, the L2 norm of the weights a channel owns: its filter (the conv's output row)
  and the consumers' input columns (Li et al. 2017, "Pruning filters for efficient ConvNets", rank filters by
  weight norm). Cost: no forward pass.

Each layer's row is divided by its L2 norm (as `prunehead.scorers.ffn`), so a global ranking compares conv
layers on one scale; channels a pruned model lacks score just below its lowest remaining one.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..families import family_of
from ..units.conv import channel_gating, conv_layers, conv_wiring, kept_channels, original_widths
from .base import Batch, Objective
from .ffn import SCORERS, gate_taylor, score_parts

__all__ = ["SCORERS", "score_conv"]


def score_conv(model: nn.Module, batches: Iterable[Batch] = (), objective: Objective | None = None,
               scorer: str = "taylor", normalize_layers: bool = True) -> torch.Tensor:
    """(C, W) float64 importance of every conv channel of `model` (`batches`, `objective`: taylor only)."""
    return score_parts(model, batches, objective, scorer, noun="conv channel", taylor=_taylor, magnitude=_magnitude,
                       kept=kept_channels, normalize_layers=normalize_layers)


def _grid(model: nn.Module) -> tuple[int, int]:
    widths = original_widths(model)
    return len(widths), max(widths)


def _taylor(model: nn.Module, batches: list[Batch], objective: Objective) -> torch.Tensor:
    """(C, W) mean over samples of |dL_b/dg_b| (channels a pruned model lacks get exactly 0 here)."""
    return gate_taylor(model, batches, objective, _grid(model), channel_gating)


def _magnitude(model: nn.Module) -> torch.Tensor:
    """(C, W) sqrt(||filter c||^2 + sum over consumers ||input column c||^2) (0 where removed)."""
    root = family_of(model).conv_root(model)
    grid = torch.zeros(*_grid(model), dtype=torch.float64)
    for layer, (conv, wired, ids) in enumerate(zip(conv_layers(model), conv_wiring(model), kept_channels(model))):
        norm = conv.weight.detach().double().pow(2).flatten(1).sum(1)  # (C_l,)
        for name in wired.consumers:
            weight = root.get_submodule(name).weight.detach().double()  # (D, C_l) or (C_out, C_l, K)
            norm = norm + weight.pow(2).transpose(0, 1).flatten(1).sum(1)
        grid[layer, ids] = norm.sqrt().cpu()
    return grid
