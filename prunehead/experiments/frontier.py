"""The speed / accuracy frontier: one head ranking and one FFN-neuron ranking cut on a grid of ratios.

Every grid point (head ratio x FFN ratio) gets its metric with the heads and neurons gated to 0 (one
evaluation of the split, no surgery: gating == removal, `tests/test_surgery.py`, `tests/test_ffn.py`), its
MACs counted on a physically pruned copy (`count_macs`, one forward of `seconds` of input), and with
`latency` the ONNX Runtime latency of that copy, timed in turns with the dense model
(`prunehead.export.bench`). The points no other point beats on both metric and cost are Pareto-optimal.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..cost import count_macs, count_params, example_inputs
from .curves import LOWER_IS_BETTER, MAX_POINTS, Evaluate, evaluate_plan
from ..errors import InputError
from ..pruning.plan import PruningPlan
from ..units.base import Amount
from ..progress import bar as progress_bar, say
from ..surgery import plan_of

FORMAT = "prunehead.frontier"
VERSION = 1
FFN_SCOPE = "per_layer"  # FFN neurons are cut per layer, as `prunehead prune --ffn-ratio` does by default


def grid(model: nn.Module, scores: Mapping[str, torch.Tensor], ratios: Mapping[str, Sequence[float]],
         scope: str = "global", floors: Mapping[str, int] | None = None) -> list[tuple[dict[str, float], PruningPlan]]:
    """({kind: ratio}, plan) for every point of the product of the kinds' ratios (in `KINDS` order, the
    first kind outermost); heads are cut by `scope`, every other kind per layer keeping `floors[kind]`
    (default 1) units; removed units count; layers go first and the shares of heads and neurons are of the
    layers that stay."""
    from ..units.kinds import KINDS, select_kept

    kinds = [k for k in KINDS if k in ratios]
    if math.prod(len(ratios[k]) for k in kinds) > MAX_POINTS:
        raise InputError(f"the grid has {' x '.join(str(len(ratios[k])) for k in kinds)} points; use at most "
                         f"{MAX_POINTS} (larger STEPs in --ratios / --ffn-ratios / --conv-ratios / --layer-ratios)")
    done = plan_of(model)
    points = []
    for combo in itertools.product(*(ratios[k] for k in kinds)):
        plan = done
        for k, ratio in sorted(zip(kinds, combo), key=lambda kr: kr[0] != "layers"):  # layers first
            amount = Amount(ratio=ratio, scope=scope if k == "heads" else FFN_SCOPE,
                            min_per_layer=0 if k == "heads" else (floors or {}).get(k, 1))
            plan = select_kept(k, scores[k], plan, amount)
        points.append((dict(zip(kinds, combo)), plan))
    return points


def pruned_copy(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """A copy of `model` with every unit of `plan` physically removed."""
    from ..units.kinds import remove_all_

    return remove_all_(copy.deepcopy(model), plan)


def pareto_flags(gain: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Whether each point is Pareto-optimal: no other point has at least its gain at most its cost, and is
    strictly better in one of them (equal points are all optimal). O(n log n)."""
    order = sorted(range(len(gain)), key=lambda i: (cost[i], -gain[i]))
    flags = [False] * len(gain)
    best = -float("inf")  # the highest gain among strictly cheaper points
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and cost[order[end]] == cost[order[start]]:
            end += 1
        top = gain[order[start]]  # the group's highest gain (sorted first)
        for i in order[start:end]:
            flags[i] = gain[i] == top and top > best
        best = max(best, top)
        start = end
    return flags


def run_frontier(model: nn.Module, evaluate: Evaluate, scores: Mapping[str, torch.Tensor],
                 ratios: Mapping[str, Sequence[float]], *, metric: str, scope: str = "global",
                 settings: Any = None, progress: bool = True) -> dict[str, Any]:
    """The metric, MACs (and latency) of every grid point, and which points are Pareto-optimal.

    Args:
        evaluate: model -> metric dict (must contain `metric`); called with the units gated.
        scores, ratios: per unit kind ("heads", "ffn", "conv", "layers"), the (L, W) importances (higher = keep) and
            the ratios of the grid.
        scope: the heads' "global" or "per_layer"; FFN neurons are cut per layer.
        settings: a `prunehead.specs.Frontier` (floor of neurons per layer; `seconds`, the input length of the
            MAC count and of the timed inputs; `latency`, `batch_sizes`, `repeats` of the ONNX Runtime timing).

    Returns:
        {"format", "metric", "unpruned", "dense_macs", "latency", "points": [...]}; a point has head_ratio,
        ffn_ratio, heads_removed, neurons_removed (with conv: conv_ratio, channels_removed), `metric`, macs,
        mac_fraction, params, latency_ms and speedup ({str(batch): value}, None without `latency`), pareto (vs MACs) and pareto_speedup
        ({str(batch): bool} vs speedup). Cost: one evaluation of the split and one MAC count per distinct
        plan; with `latency` one ONNX export per distinct plan and (3 + repeats) runs per model and batch.
    """
    from ..specs import Frontier

    settings = settings or Frontier(ffn_ratios=tuple(ratios.get("ffn", (0.0,))))
    seconds, latency, min_neurons_per_layer = settings.seconds, settings.latency, settings.min_neurons_per_layer
    batch_sizes, repeats = settings.sizes, settings.repeats
    plans = grid(model, scores, ratios, scope, {"ffn": min_neurons_per_layer})
    host = copy.deepcopy(model).cpu()  # physical copies and exports happen on the CPU
    dense = _dense(host)
    inputs = example_inputs(host, seconds)
    dense_macs = count_macs(dense, inputs)["total"]
    unpruned = evaluate_plan(model, plan_of(model), evaluate)  # the (0, 0) point's code path
    if metric not in unpruned:
        raise InputError(f"metric {metric!r} is not among {sorted(unpruned)}; pass one of them to --metric")
    values = {_key(plan_of(model)): unpruned[metric]}  # the (0, 0) point is not evaluated twice
    points, measured = [], {}
    with (_bench(dense) if latency else contextlib.nullcontext()) as bench:
        names = {_key(plan_of(host)): "reference"} if bench is not None and dense is host else {}
        for point, plan in progress_bar(plans, desc="frontier", enable=progress):
            key = _key(plan)
            if key not in measured:  # grid points often share a plan (floor(ratio * units) is equal)
                value = values[key] if key in values else evaluate_plan(model, plan, evaluate)[metric]
                measured[key] = _measure(host, plan, inputs, bench, names)
                measured[key][metric] = value
            points.append({"head_ratio": point.get("heads", 0.0), "ffn_ratio": point.get("ffn", 0.0),
                           "heads_removed": plan.num_pruned,
                           "neurons_removed": plan.num_pruned_ffn,
                           **({"conv_ratio": point.get("conv", 0.0), "channels_removed": plan.num_pruned_conv}
                              if "conv" in ratios else {}),
                           **({"layer_ratio": point.get("layers", 0.0), "layers_removed": plan.num_pruned_layers}
                              if "layers" in ratios else {}), metric: measured[key][metric],
                           "macs": measured[key]["macs"], "params": measured[key]["params"],
                           "mac_fraction": measured[key]["macs"] / dense_macs, "latency_ms": None, "speedup": None})
        timing = _time(bench, names, points, plans=plans, batch_sizes=batch_sizes, length=_length(inputs),
                       repeats=repeats, progress=progress) if bench else None
    _mark_pareto(points, metric, batch_sizes if latency else ())
    return {"format": FORMAT, "version": VERSION, "metric": metric, "scope": scope, "ffn_scope": FFN_SCOPE,
            "min_neurons_per_layer": min_neurons_per_layer, "seconds": seconds, "dense_macs": dense_macs,
            "unpruned": unpruned, "latency": timing, "points": points}


def _measure(host: nn.Module, plan: PruningPlan, inputs: dict[str, torch.Tensor], bench: Any,
             names: dict[tuple, str]) -> dict[str, Any]:
    """MACs and parameters of a physically pruned copy; with a bench, the copy is exported to it as well."""
    pruned = pruned_copy(host, plan)
    key = _key(plan)
    if bench is not None and key not in names:
        names[key] = f"point-{len(names)}"
        bench.add(names[key], pruned)
    return {"macs": count_macs(pruned, inputs)["total"], "params": count_params(pruned)}


def _time(bench: Any, names: dict[tuple, str], points: list[dict[str, Any]],
          plans: list[tuple[dict[str, float], PruningPlan]], batch_sizes: Sequence[int], length: int, repeats: int,
          progress: bool) -> dict[str, Any]:
    """Time every exported model in turns with the dense one; fill each point's latency_ms and speedup."""
    from ..export.bench import GROUP
    from ..export.latency import DEFAULT_THREADS

    if progress:
        say(f"frontier: timing {len(bench.files)} ONNX models in turns ({repeats} runs each per batch size)")
    groups = max(1, -(-(len(bench.files) - 1) // GROUP))
    with progress_bar(total=groups * len(batch_sizes), desc="latency", enable=progress) as bar:
        medians = bench.time(batch_sizes, length, repeats, tick=bar.update)
    speedups = {**bench.speedups(medians), "reference": {str(b): 1.0 for b in batch_sizes}}
    for point, (_, plan) in zip(points, plans):
        name = names[_key(plan)]
        point["latency_ms"], point["speedup"] = medians[name], speedups[name]
    return {"batch_sizes": list(batch_sizes), "repeats": repeats, "threads": DEFAULT_THREADS,
            "statistic": "median", "group": GROUP, "dense_ms": medians["reference"]}


def _mark_pareto(points: list[dict[str, Any]], metric: str, batch_sizes: Sequence[int]) -> None:
    """pareto: optimal in (metric, mac_fraction); pareto_speedup: in (metric, speedup) at each batch size."""
    gain = [(-1 if metric in LOWER_IS_BETTER else 1) * p[metric] for p in points]
    for point, flag in zip(points, pareto_flags(gain, [p["mac_fraction"] for p in points])):
        point["pareto"] = flag
        point["pareto_speedup"] = {} if batch_sizes else None
    for batch in map(str, batch_sizes):
        for point, flag in zip(points, pareto_flags(gain, [-p["speedup"][batch] for p in points])):
            point["pareto_speedup"][batch] = flag


def _length(inputs: dict[str, torch.Tensor]) -> int:
    """The input length the MACs were counted on (last axis: audio samples, tokens, or Whisper's mel frames),
    so that the timed inputs match it."""
    return int(next(iter(inputs.values())).shape[-1])


def _dense(model: nn.Module) -> nn.Module:
    """The unpruned architecture (random weights when `model` lost units: MACs and latency only)."""
    from ..export.pipeline import unpruned_reference

    return unpruned_reference(model) or model


def _bench(dense: nn.Module) -> Any:
    from ..export.bench import LatencyBench

    return LatencyBench(dense)


def _key(plan: PruningPlan) -> tuple:
    return (tuple(sorted(plan.pruned_heads.items())), tuple(sorted(plan.pruned_ffn.items())),
            tuple(sorted(plan.pruned_conv.items())), plan.pruned_layers)
