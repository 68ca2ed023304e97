"""Whole encoder layers as a unit kind: an L x 1 grid (one unit per layer), selected by `select_layers`, gated
by `layer_gating` (skip == removal), removed by `remove_layers_` (last, after every other kind), priced by
`layer_macs`; scores from `prunehead.scorers.depth` (taylor, occlusion)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..pruning.plan import PruningPlan, select_layers
from ..specs import Ranking
from .base import Amount, UnitKind
from .depth import encoder_layers, fixed_layers, layer_gating, layer_macs, remove_layers_


class Layers(UnitKind):
    """Encoder layers removed outright (depth pruning, Fan et al. 2019). Scoring reads data: taylor (one
    backward per batch) or occlusion (one forward per layer per batch)."""

    name, tag, noun, plan_key = "layers", "layer", "layers", "pruned_layers"
    scorers = ("taylor", "occlusion")
    uniform_cost = False  # a layer holds what its heads and neurons left

    def grid(self, model: nn.Module) -> tuple[int, int]:
        return len(encoder_layers(model)), 1

    def kept(self, model: nn.Module) -> list[list[int]]:
        fixed = fixed_layers(model)  # never offered to a budget
        return [[] if l in fixed else [0] for l in range(len(encoder_layers(model)))]

    def removed(self, plan: PruningPlan) -> dict[int, tuple[int, ...]]:
        return {l: (0,) for l in plan.pruned_layers}

    def with_removed(self, plan: PruningPlan, removed: dict[int, tuple[int, ...]], width: int) -> PruningPlan:
        return replace(plan, pruned_layers=tuple(sorted(set(plan.pruned_layers) | {l for l, ids in removed.items()
                                                                                   if ids})))

    def select(self, scores: torch.Tensor, plan: PruningPlan, amount: Amount) -> PruningPlan:
        return select_layers(scores, plan, ratio=amount.ratio, count=amount.count)

    def gate(self, model: nn.Module, plan: PruningPlan, stack: contextlib.ExitStack) -> None:
        if plan.pruned_layers:
            keep = self.keep_mask(plan, self.grid(model))  # (L, 1)
            stack.enter_context(layer_gating(model, keep.to(next(model.parameters()).device)))

    def macs_model(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
        return layer_macs(model, inputs)  # a layer saves what its own heads and neurons have not

    def remove_(self, model: nn.Module, plan: PruningPlan) -> None:
        remove_layers_(model, plan.pruned_layers)

    def score(self, model: nn.Module, batches: list[Any], objective: Any, ranking: Ranking, *,
              task: str | None = None, progress: bool = False) -> torch.Tensor:
        from ..scorers.depth import score_layers

        return score_layers(model, batches, objective, scorer=ranking.scorer)


LAYERS = Layers()
