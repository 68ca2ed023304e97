"""Pruning curves: metric vs pruned fraction for several score matrices, plus a random baseline band.

Inside a sweep heads are gated to 0 instead of removed: `tests/test_surgery.py` proves gating equals
physical removal, and `tests/test_sweep.py` that a sweep point equals `prunehead prune --data`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from ..progress import bar as progress_bar

from ..errors import InputError
from ..heads import head_adapter
from ..pruning.plan import PruningPlan, select
from ..surgery import plan_of

RANDOM = "random"
RANDOM_SEEDS = (0, 1, 2, 3, 4)
LOWER_IS_BETTER = ("wer", "cer", "loss")  # every other metric: higher is better
MAX_POINTS = 1000  # ratios per sweep: every point is a full evaluation per score file (and 5 for random)

# evaluate(model) -> metric dict; called with heads gated.
Evaluate = Callable[[nn.Module], dict[str, float]]


def parse_ratios(spec: str, flag: str = "--ratios") -> list[float]:
    """"0:0.9:0.1" -> [0.0, 0.1, ..., 0.9]; "0.2,0.4" -> [0.2, 0.4]. Each within [0, 1]; errors name `flag`."""
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if not step > 0:
                raise ValueError
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            if count > MAX_POINTS:
                raise InputError(f"{flag} {spec!r} gives {count} points; use at most {MAX_POINTS} (a larger STEP)")
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {spec!r}: use START:STOP:STEP (e.g. 0:0.9:0.1) or a comma list") from None
    if len(values) > MAX_POINTS:
        raise InputError(f"{flag} {spec!r} gives {len(values)} points; use at most {MAX_POINTS}")
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise InputError(f"{flag} {spec!r}: every ratio must be within [0, 1]")
    return values


@dataclass
class Curve:
    """One line of the plot: the metric at each point (for random: mean and std over seeds)."""

    scorer: str
    points: list[dict[str, Any]] = field(default_factory=list)


def evaluate_plan(model: nn.Module, plan: PruningPlan, evaluate: Evaluate) -> dict[str, float]:
    """The metrics of `model` with every unit of `plan` (heads, FFN neurons, ...) gated to 0 (== removed)."""
    from ..units.kinds import evaluate_gated

    return evaluate_gated(model, plan, evaluate)


def _plans(scores: torch.Tensor, model: nn.Module, scope: str, ratios: Sequence[float],
           heads: Sequence[int] | None) -> list[tuple[float | int, PruningPlan]]:
    done = plan_of(model)
    if heads is not None:
        return [(k, select(scores, heads=k, scope="per_layer", pruned=done)) for k in heads]
    return [(r, select(scores, ratio=r, scope=scope, pruned=done)) for r in ratios]


def run_sweep(model: nn.Module, evaluate: Evaluate, score_sets: dict[str, torch.Tensor], *, metric: str,
          scope: str = "global", ratios: Sequence[float] = (), heads: Sequence[int] | None = None,
          random_seeds: Sequence[int] = RANDOM_SEEDS, progress: bool = True) -> dict[str, Any]:
    """Evaluate every score matrix at every point, and random scores over `random_seeds`.

    Args:
        evaluate: model -> metric dict (must contain `metric`).
        score_sets: scorer name -> (L, H) scores.
        scope: "global" or "per_layer" (for ratios); `heads` sweeps K heads removed per layer instead.

    Returns:
        {"metric", "scope", "unpruned", "curves": {name: [point, ...]}} where a point is
        {"x" (ratio or K), "pruned_fraction", "heads_removed", metric[, "std"]}.
    """
    adapter = head_adapter(model)
    total = adapter.num_layers * adapter.num_heads
    random = {f"{RANDOM}:{s}": torch.rand(adapter.num_layers, adapter.num_heads,
                                           generator=torch.Generator().manual_seed(s)) for s in random_seeds}
    jobs = {**score_sets, **random}
    steps = len(jobs) * (len(heads) if heads is not None else len(ratios))
    bar = progress_bar(total=steps + 1, desc="sweep", enable=progress)
    unpruned = evaluate_plan(model, plan_of(model), evaluate)  # same (gated) code path as every point
    if metric not in unpruned:
        raise InputError(f"metric {metric!r} is not among {sorted(unpruned)}")
    bar.update()
    cache: dict[tuple, dict[str, float]] = {_key(plan_of(model)): unpruned}  # scorers often share a point
    raw: dict[str, list[dict[str, Any]]] = {}
    for name, scores in jobs.items():
        raw[name] = []
        for x, plan in _plans(scores, model, scope, ratios, heads):
            key = _key(plan)
            if key not in cache:
                cache[key] = evaluate_plan(model, plan, evaluate)
            raw[name].append({"x": x, "heads_removed": plan.num_pruned, "pruned_fraction": plan.num_pruned / total,
                              metric: cache[key][metric]})
            bar.update()
    bar.close()
    curves = {name: points for name, points in raw.items() if not name.startswith(f"{RANDOM}:")}
    if random_seeds:
        curves[RANDOM] = _mean_band([raw[f"{RANDOM}:{s}"] for s in random_seeds], metric)
    return {"metric": metric, "scope": "per_layer" if heads is not None else scope,
            "unpruned": unpruned, "curves": curves}


def _key(plan: PruningPlan) -> tuple:
    return tuple(sorted(plan.pruned_heads.items()))


def _mean_band(runs: list[list[dict[str, Any]]], metric: str) -> list[dict[str, Any]]:
    band = []
    for points in zip(*runs):
        values = [p[metric] for p in points]
        band.append({**points[0], metric: statistics.fmean(values),
                     "std": statistics.pstdev(values) if len(values) > 1 else 0.0})
    return band
