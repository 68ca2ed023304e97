"""Convolution channels of the front end as a unit kind (their wiring, gate and removal live in
`prunehead.units.conv`; scores in `prunehead.scorers.conv`)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..errors import InputError, UnsupportedModelError
from ..pruning.plan import PruningPlan, select_conv
from ..specs import Ranking
from .base import Amount, UnitKind
from .conv import channel_gating, channel_macs, kept_channels, original_widths, prune_conv_


class Channels(UnitKind):
    """Output channels of the front end's convolutions: a C x W grid (C conv layers of W channels; Whisper:
    conv1 alone). Magnitude (data-free) and taylor scores, like the FFN neurons."""

    name, tag, noun, plan_key = "conv", "conv", "conv channels", "pruned_conv"
    scorers = ("taylor", "magnitude")
    data_free = ("magnitude",)
    uniform_cost = False  # each conv layer runs at its own frame rate and kernel

    def grid(self, model: nn.Module) -> tuple[int, int]:
        widths = original_widths(model)
        if len(set(widths)) != 1:
            raise UnsupportedModelError(f"the conv layers have unequal widths {widths}; prunehead ranks conv "
                                        "channels on a grid of equal layers")
        return len(widths), widths[0]

    def kept(self, model: nn.Module) -> list[list[int]]:
        return kept_channels(model)

    def removed(self, plan: PruningPlan) -> dict[int, tuple[int, ...]]:
        return plan.pruned_conv

    def with_removed(self, plan: PruningPlan, removed: dict[int, tuple[int, ...]], width: int) -> PruningPlan:
        return plan.union(PruningPlan(plan.num_layers, plan.num_heads, pruned_conv=removed, conv_width=width))

    def select(self, scores: torch.Tensor, plan: PruningPlan, amount: Amount) -> PruningPlan:
        if amount.ratio is None:
            raise InputError("conv channels are cut by a ratio (--conv-ratio), not a count per layer")
        return select_conv(scores, plan, ratio=amount.ratio, scope=amount.scope,
                           min_channels_per_layer=amount.min_per_layer)

    def gate(self, model: nn.Module, plan: PruningPlan, stack: contextlib.ExitStack) -> None:
        if plan.pruned_conv:
            keep = self.keep_mask(plan, self.grid(model))  # (C, W)
            stack.enter_context(channel_gating(model, keep.to(next(model.parameters()).device)))

    def macs_model(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
        return channel_macs(model, inputs)  # a channel's cost depends on how many its neighbours keep

    def remove_(self, model: nn.Module, plan: PruningPlan) -> None:
        prune_conv_(model, plan.pruned_conv)

    def score(self, model: nn.Module, batches: list[Any], objective: Any, ranking: Ranking, *,
              task: str | None = None, progress: bool = False) -> torch.Tensor:
        from ..scorers.conv import score_conv

        return score_conv(model, batches, objective, scorer=ranking.scorer)


CHANNELS = Channels()
