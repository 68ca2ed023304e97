"""Attention heads as a unit kind: selection by `prunehead.select`, gating through `prunehead.controlled`,
removal by `prunehead.prune_`, scores from the scorer registry (hib, attattr, gradient, ...)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..control import controlled
from ..heads import head_adapter
from ..pruning.plan import PruningPlan, select
from ..surgery import prune_heads_
from ..specs import Ranking
from .base import Amount, UnitKind


class Heads(UnitKind):
    name, tag, noun, plan_key = "heads", "head", "heads", "pruned_heads"

    def grid(self, model: nn.Module) -> tuple[int, int]:
        adapter = head_adapter(model)
        return adapter.num_layers, adapter.num_heads

    def kept(self, model: nn.Module) -> list[list[int]]:
        return head_adapter(model).kept_heads(model)

    def removed(self, plan: PruningPlan) -> dict[int, tuple[int, ...]]:
        return plan.pruned_heads

    def with_removed(self, plan: PruningPlan, removed: dict[int, tuple[int, ...]], width: int) -> PruningPlan:
        return plan.union(PruningPlan(plan.num_layers, plan.num_heads, removed))

    def select(self, scores: torch.Tensor, plan: PruningPlan, amount: Amount) -> PruningPlan:
        chosen = select(scores, ratio=amount.ratio, heads=amount.count, scope=amount.scope,
                        min_heads_per_layer=amount.min_per_layer, pruned=plan)
        return plan.union(chosen)

    def gate(self, model: nn.Module, plan: PruningPlan, stack: contextlib.ExitStack) -> None:
        ctl = stack.enter_context(controlled(model))
        stack.enter_context(ctl.gating(plan.keep_mask()))

    def remove_(self, model: nn.Module, plan: PruningPlan) -> None:
        prune_heads_(model, PruningPlan(plan.num_layers, plan.num_heads, plan.pruned_heads))

    def score(self, model: nn.Module, batches: list[Any], objective: Any, ranking: Ranking, *,
              task: str | None = None, progress: bool = False) -> torch.Tensor:
        from ..scorers.registry import build_scorer
        from ..scorers.parallel import run

        method = build_scorer(ranking.scorer, ranking.options, task=task, seed=ranking.seed)
        method.progress = progress
        return run(method, model, batches, objective, progress=progress).scores


HEADS = Heads()
