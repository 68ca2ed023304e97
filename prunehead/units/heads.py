"""Attention heads as a unit kind: selection by `prunehead.select`, gating through `prunehead.controlled`,
removal by `prune_heads_` (here; `prunehead.prune_` removes every kind), scores from the scorer registry
(hib, attattr, gradient, ...)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..control import controlled
from ..errors import InputError
from ..heads import PRUNED_HEADS_KEY, head_adapter, pruned_heads_of
from ..pruning.plan import PruningPlan, select
from ..specs import Ranking
from .base import Amount, UnitKind


def check_grid(model: nn.Module, plan: PruningPlan) -> None:
    """InputError unless `plan` is made for the (layers, heads) grid `model` has now."""
    adapter = head_adapter(model)
    if (plan.num_layers, plan.num_heads) != (adapter.num_layers, adapter.num_heads):
        raise InputError(f"the plan is for {plan.num_layers} x {plan.num_heads} heads but the model has "
                         f"{adapter.num_layers} x {adapter.num_heads}; make the plan for this model")


def prune_heads_(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Remove the heads of `plan` (original ids) from `model` in place; heads already gone are skipped; the
    plan's other kinds are left alone (`prune_` removes them)."""
    check_grid(model, plan)
    adapter = head_adapter(model)
    kept_all = adapter.kept_heads(model)
    for site, kept in zip(adapter.sites, kept_all):
        remove = set(plan.pruned_heads.get(site.layer, ())) & set(kept)
        if not remove:
            continue
        new_kept = [h for h in kept if h not in remove]
        if new_kept:
            adapter.family.slice_heads_(site, [kept.index(h) for h in new_kept], adapter.head_dim)
        else:
            adapter.family.empty_(site)
    merged = PruningPlan(adapter.num_layers, adapter.num_heads,
                         {l: tuple(h) for l, h in pruned_heads_of(model).items()}).union(plan)
    setattr(model.config, PRUNED_HEADS_KEY, {str(l): list(h) for l, h in merged.pruned_heads.items()})
    return model


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
        prune_heads_(model, plan)

    def score(self, model: nn.Module, batches: list[Any], objective: Any, ranking: Ranking, *,
              task: str | None = None, progress: bool = False) -> torch.Tensor:
        from ..scorers.registry import build_scorer
        from ..scorers.parallel import run

        method = build_scorer(ranking.scorer, ranking.options, task=task, seed=ranking.seed)
        method.progress = progress
        return run(method, model, batches, objective, progress=progress).scores


HEADS = Heads()
