"""Prune to an accuracy budget, and choose the scorer by measurement.

`max_drop_plan` finds the most heads a ranking can lose while the metric on a selection split stays within
`max_drop` of the unpruned model: a bisection over the number of heads removed, each probe a gated
evaluation (gating == removal, tests/test_surgery.py), so no surgery happens until the chosen plan is
applied once. The metric is `accuracy`; for ASR that is 1 - WER, so its drop is the WER rise.

`choose_scorer` ranks candidate score matrices on the same selection split: by the most heads within the
budget (ties: the better metric there), or without a budget by the mean metric over a few points up to the
target (a Riemann sum of the area under the curve).

The budgets over several kinds (one removal order of heads, neurons, channels and layers) live in
`prunehead.pruning.order`; they use this module's bisection.

Cost: one evaluation of the selection split per probe: about log2(L * H) + 2 probes per ranking (global),
log2(H) + 2 per layer, log2(units) + 2 over heads and neurons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..experiments.curves import LOWER_IS_BETTER, evaluate_plan
from ..errors import InputError
from ..heads import head_adapter
from .plan import PruningPlan, select
from ..surgery import plan_of

METRIC = "accuracy"  # ASR tasks report accuracy = 1 - WER, so one key serves every task
AUTO_SCORERS = ("gradient", "attention", "occlusion", "attattr")  # the cheap ones; hib and plugins on request
Evaluate = Callable[[nn.Module], dict[str, float]]


@dataclass
class Search:
    """The outcome of `max_drop_plan`: the chosen plan and every probe, in the order they ran."""

    plan: PruningPlan
    count: int  # heads removed in all (global) or per layer (per_layer) at the chosen point
    metric: float  # the selection metric there
    unpruned: float
    probes: list[dict[str, Any]] = field(default_factory=list)  # {"count", "heads_removed", metric}
    extra: dict[str, Any] = field(default_factory=dict)  # over heads and neurons: neurons removed, MACs

    def to_json(self) -> dict[str, Any]:
        chosen = {"count": self.count, "heads_removed": self.plan.num_pruned, METRIC: self.metric, **self.extra}
        return {"chosen": chosen, "unpruned": {METRIC: self.unpruned}, "probes": self.probes}


def _plan_at(scores: torch.Tensor, count: int, scope: str, min_heads: int, done: PruningPlan) -> PruningPlan:
    L, H = scores.shape
    if scope == "global":
        return select(scores, ratio=count / (L * H), scope="global", min_heads_per_layer=min_heads, pruned=done)
    return select(scores, heads=count, scope="per_layer", min_heads_per_layer=min_heads, pruned=done)


def max_drop_plan(model: nn.Module, scores: torch.Tensor, evaluate: Evaluate, max_drop: float, *,
                  scope: str = "global", min_heads_per_layer: int = 0, progress: Callable[[str], None] | None = None,
                  ) -> Search:
    """The plan removing the most heads (lowest `scores` first) whose selection metric stays within
    `max_drop` of the unpruned model's. Assumes the metric falls (weakly) as heads go; every probe is
    recorded, so a non-monotone curve is visible in the report.

    Args:
        evaluate: model -> metrics on the selection split (called with heads gated).
        max_drop: largest allowed drop of `accuracy` (ASR: rise of WER), e.g. 0.01.
    """
    adapter = head_adapter(model)
    L, H = adapter.num_layers, adapter.num_heads
    done = plan_of(model)

    def plan_at(count: int) -> tuple[PruningPlan, dict[str, Any], str]:
        plan = _plan_at(scores, count, scope, min_heads_per_layer, done)
        return plan, {"heads_removed": plan.num_pruned}, f"{plan.num_pruned} heads removed"

    return bisect_units(model, plan_at, evaluate, max_drop, L * H if scope == "global" else H - 1, progress)


def bisect_units(model: nn.Module, plan_at: Callable[[int], tuple[PruningPlan, dict[str, Any], str]], evaluate: Evaluate,
            max_drop: float, most: int, progress: Callable[[str], None] | None) -> Search:
    """The bisection behind both budgets: `plan_at(count)` gives the plan removing `count` units, its probe
    fields and a line for `progress`; every count is evaluated once, gated (== removed)."""
    if not math.isfinite(max_drop) or not 0 <= max_drop <= 1:
        raise InputError(f"--max-drop must be within [0, 1], got {max_drop}")
    probes: list[dict[str, Any]] = []
    cache: dict[int, tuple[PruningPlan, float]] = {}

    def probe(count: int) -> float:
        if count not in cache:
            plan, fields, line = plan_at(count)
            metrics = evaluate_plan(model, plan, evaluate)
            if METRIC not in metrics:
                raise InputError(f"the task reports no {METRIC!r} to budget (got {sorted(metrics)})")
            cache[count] = (plan, metrics[METRIC])
            probes.append({"count": count, **fields, METRIC: metrics[METRIC]})
            if progress is not None:
                progress(f"probe: {line} -> {METRIC} {metrics[METRIC]:.4f}")
        return cache[count][1]

    unpruned = probe(0)
    lo = _longest_within(probe, unpruned, max_drop, most)
    plan, metric = cache[lo]
    return Search(plan, lo, metric, unpruned, probes)


def _longest_within(probe: Callable[[int], float], unpruned: float, max_drop: float, most: int) -> int:
    """The largest count in [0, most] whose probed metric is within `max_drop` of `unpruned`, by bisection
    (0 is known to be within). If count + 1 < most was not taken, it was probed and broke the budget."""
    lo, hi = 0, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if unpruned - probe(mid) <= max_drop + 1e-12:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class Choice:
    """The outcome of `choose_scorer`: the best name, and every candidate's numbers."""

    best: str
    candidates: dict[str, dict[str, Any]]


def choose_scorer(model: nn.Module, rankings: Mapping[str, torch.Tensor], evaluate: Evaluate, *,
                  max_drop: float | None = None, ratio: float | None = None, heads: int | None = None,
                  scope: str = "global", min_heads_per_layer: int = 0, points: int = 4) -> Choice:
    """The ranking that keeps the metric best on the selection split.

    With `max_drop`: the most heads within the budget (ties: the higher metric there). Otherwise: the mean
    metric at `points` evenly spaced fractions of the target (`ratio` or `heads`), i.e. the area under
    its curve up to the target.
    """
    if not rankings:
        raise InputError("--scorer auto needs at least one candidate scorer")
    candidates: dict[str, dict[str, Any]] = {}
    for name, scores in rankings.items():
        if max_drop is not None:
            search = max_drop_plan(model, scores, evaluate, max_drop, scope=scope,
                                   min_heads_per_layer=min_heads_per_layer)
            candidates[name] = {**search.to_json(), "key": (search.plan.num_pruned, search.metric)}
        else:
            curve = _curve(model, scores, evaluate, ratio=ratio, heads=heads, scope=scope,
                           min_heads=min_heads_per_layer, points=points)
            area = sum(p[METRIC] for p in curve) / len(curve)
            candidates[name] = {"curve": curve, "area": area, "key": (area,)}
    best = max(candidates, key=lambda n: candidates[n]["key"])
    for entry in candidates.values():
        entry["key"] = list(entry["key"])
    return Choice(best, candidates)


def _curve(model: nn.Module, scores: torch.Tensor, evaluate: Evaluate, ratio: float | None, heads: int | None,
           scope: str, min_heads: int, points: int) -> list[dict[str, Any]]:
    done = plan_of(model)
    curve = []
    for i in range(1, points + 1):
        if heads is not None:
            plan = select(scores, heads=round(heads * i / points), scope="per_layer", min_heads_per_layer=min_heads,
                          pruned=done)
        else:
            plan = select(scores, ratio=ratio * i / points, scope=scope, min_heads_per_layer=min_heads, pruned=done)
        curve.append({"heads_removed": plan.num_pruned, METRIC: evaluate_plan(model, plan, evaluate)[METRIC]})
    return curve


def best_curve(result: dict[str, Any]) -> str | None:
    """The scorer of a sweep result whose curve has the largest mean metric (random excluded)."""
    metric = result["metric"]
    means = {name: sum(p[metric] for p in points) / len(points)
             for name, points in result["curves"].items() if name != "random" and points}
    if not means:
        return None
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return max(means, key=lambda name: sign * means[name])  # ties: the first listed
