"""Iterative pruning: reach a pruning target in K rounds, re-scoring the heads that are left before each.

One-shot pruning ranks every head once, on the full model; removing heads changes what the others
contribute, so Michel et al. (2019, §6) and TextPruner prune in rounds and re-score in between. Round i of
K removes heads until round(i / K * target) are gone in all (global) or in every layer (per layer), halves
rounded up; the last round uses the target itself, so `rounds=1` is exactly one-shot pruning and K rounds
remove exactly as many heads as one-shot pruning at the same target.

Cost: up to K scorings (the scorer's cost, on the model pruned so far) and K evaluations when asked.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..heads import head_adapter
from .plan import PruningPlan, select
from ..surgery import plan_of
from ..units.heads import prune_heads_

ScoreFn = Callable[[nn.Module], torch.Tensor]  # model pruned so far -> (L, H) scores, higher = more important
Evaluate = Callable[[nn.Module], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Target:
    """How many heads to remove, as `prunehead.select` takes it (see there for the arguments)."""

    ratio: float | None = None
    heads: int | None = None
    scope: str = "global"
    min_heads_per_layer: int = 0

    def plan(self, scores: torch.Tensor, pruned: PruningPlan) -> PruningPlan:
        """The plan that reaches this target from `pruned`, removing the lowest `scores` first."""
        return select(scores, **dataclasses.asdict(self), pruned=pruned)

    def check(self, pruned: PruningPlan) -> None:
        """InputError for an invalid target (before anything is scored)."""
        self.plan(torch.zeros(pruned.num_layers, pruned.num_heads), pruned)

    def at_round(self, step: int, steps: int, num_layers: int, num_heads: int) -> Target:
        """The cumulative target after round `step` of `steps`: round(step / steps * this target)."""
        if step == steps:
            return self
        if self.scope == "global":  # select's own count: floor(ratio * L * H)
            total = num_layers * num_heads
            share = step_share(math.floor(self.ratio * total + 1e-9), step, steps)
        else:
            total = num_heads
            per_layer = self.heads if self.heads is not None else math.floor(self.ratio * total + 1e-9)
            share = step_share(per_layer, step, steps)
        return dataclasses.replace(self, ratio=share / total, heads=None)


def step_share(count: int, step: int, steps: int) -> int:
    """round(step / steps * count) with halves rounded up (integers only, no float ties)."""
    return (2 * step * count + steps) // (2 * steps)


def prune_iteratively(model: nn.Module, score_fn: ScoreFn | None, target: Target, rounds: int, *,
                      first_scores: torch.Tensor | None = None, evaluate: Evaluate | None = None,
                      ) -> tuple[nn.Module, PruningPlan, list[dict[str, Any]]]:
    """Prune a copy of `model` to `target` in `rounds` rounds, re-scoring its remaining heads before each.

    Args:
        model: the model to prune (not changed); heads it has already lost count towards the target.
        score_fn: scores the model pruned so far, (L, H), removed heads ranked lowest (every prunehead
            scorer does this). Not called for a round that has nothing to remove.
        target: the final target, reached by the last round exactly as one-shot pruning would.
        rounds: K >= 1.
        first_scores: (L, H) scores for the first round that removes heads, instead of calling `score_fn`
            (e.g. a score file).
        evaluate: metrics of the model after each round (re-used while a round removes nothing).

    Returns:
        (pruned copy, its plan, one record per round: plan, heads removed, scores used, metrics).
    """
    adapter = head_adapter(model)
    L, H = adapter.num_layers, adapter.num_heads
    if rounds < 1:
        raise InputError(f"--rounds must be at least 1, got {rounds}")
    if score_fn is None and (rounds > 1 or first_scores is None):
        raise InputError("pruning in rounds re-scores the remaining heads: give a scorer (--scorer with --data)")
    target.check(plan_of(model))
    pruned = copy.deepcopy(model)
    history: list[dict[str, Any]] = []
    metrics: dict[str, float] | None = None
    for step in range(1, rounds + 1):
        done, goal = plan_of(pruned), target.at_round(step, rounds, L, H)
        scores, source = None, None
        if goal.plan(torch.zeros(L, H), done).num_pruned > done.num_pruned:  # counts do not depend on scores
            use_file = first_scores is not None and not any(h["scored_by"] for h in history)
            scores, source = (first_scores, "scores") if use_file else (score_fn(pruned), "scorer")
            prune_heads_(pruned, goal.plan(scores, done))
        if evaluate is not None and (scores is not None or metrics is None):
            metrics = evaluate(pruned)
        history.append(_record(step, done, plan_of(pruned), scores, source, metrics))
    return pruned, plan_of(pruned), history


def _record(step: int, before: PruningPlan, after: PruningPlan, scores: torch.Tensor | None, source: str | None,
            metrics: dict[str, float] | None) -> dict[str, Any]:
    """One entry of the history (report.json "rounds"); `source`: "scores" (given), "scorer" or None."""
    record = {"round": step, "heads_removed": after.num_pruned - before.num_pruned,
              "heads_removed_total": after.num_pruned, "pruned_heads": after.to_json()["pruned_heads"],
              "scored_by": source, "scores": scores.tolist() if scores is not None else None}
    return record if metrics is None else {**record, "metrics": metrics}
