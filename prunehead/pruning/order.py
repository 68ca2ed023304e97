"""Every kind's units in one removal order, cheapest per MAC first: a MAC budget (`target_macs_plan`), an
accuracy budget over several kinds (`max_drop_units_plan`, the bisection of `prunehead.pruning.budget`) and
the MAC floor (`mac_floor`).

Cost: `removal_order` counts MACs once per kind (per layer for conv channels and layers) plus once for the
model (and once for the dense architecture when pruned); `max_drop_units_plan` about log2(units) + 2
evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .budget import Evaluate, Search, bisect_units
from .plan import PruningPlan
from .targets import FLOORS
from ..surgery import plan_of

UNITS = ("heads", "ffn", "both")  # what a budget removes (`--units`)


@dataclass
class RemovalOrder:
    """Every unit `model` still has of the ranked kinds (heads, FFN neurons, ...), in the order a budget
    removes them.

    `units[i]` is (tag, layer, original id, MACs its removal saves), tag the kind's ("head", "ffn"). The rule:
    within each kind a unit's importance is its rank among the units the model still has, scaled to [0, 1]
    (0 = least important), so scores of different scales compare; its price is that quantile divided by the
    MACs the whole kind holds (units x the MACs one removal saves, counted with FlopCounterMode on `seconds`
    of input, once per kind). So each kind is cut to a quantile in proportion to the MACs it holds.
    Cheapest first; a unit that would take its layer below the kind's per-layer floor is left out, so every
    prefix is a valid plan.
    """

    units: list[tuple[str, int, int, int]]
    dense_macs: int  # the unpruned architecture's
    macs: int  # the model's as given
    unit_macs: dict[str, int]  # {kind: MACs one removal of a unit of that kind saves} (0: not ranked)
    plan: PruningPlan  # what the model had already lost
    widths: dict[str, int]  # {kind: units per layer as configured}
    exact: dict[str, Any] = field(default_factory=dict)  # {tag: the kind's `macs_model`} where removals interact
    rule: str = "rank quantile within kind / MACs the kind holds, cheapest first"

    @property
    def head_macs(self) -> int:
        return self.unit_macs.get("heads", 0)

    @property
    def neuron_macs(self) -> int:
        return self.unit_macs.get("ffn", 0)

    def plan_at(self, count: int) -> PruningPlan:
        """The plan removing the first `count` units (plus what the model had already lost); heads and neurons
        of a layer the prefix removes whole are left out (the layer takes them)."""
        from ..units.kinds import KINDS

        by_tag = {KINDS[name].tag: name for name in self.unit_macs}
        removed: dict[str, dict[int, list[int]]] = {name: {} for name in self.unit_macs}
        for tag, layer, unit, _ in self.units[:count]:
            removed[by_tag[tag]].setdefault(layer, []).append(unit)
        gone = set(removed.get("layers", {}))
        plan = self.plan
        for name, layers in removed.items():
            covered = name in ("heads", "ffn")  # per encoder layer, like the layers kind
            plan = KINDS[name].with_removed(plan, {l: tuple(sorted(ids)) for l, ids in layers.items()
                                                   if not (covered and l in gone)}, self.widths[name])
        return plan

    def sorted_by(self, key: Callable[[str, int, int], Any], rule: str) -> RemovalOrder:
        """The same units in the order of `key(kind, layer, id)` (stable), described by `rule`."""
        from ..units.kinds import KINDS

        kind = {KINDS[name].tag: name for name in self.unit_macs}
        return replace(self, units=sorted(self.units, key=lambda u: key(kind[u[0]], u[1], u[2])), rule=rule)

    def macs_at(self, count: int) -> int:
        """The model's MACs once the first `count` units are gone, exactly: independent units (heads, neurons)
        by their costs, interacting ones (conv channels, layers) by their kind's MAC model."""
        return self.macs - ([0] + self.savings(count))[-1]

    def savings(self, count: int) -> list[int]:
        """MACs saved by the prefixes of 1..`count` units, exact; one pass. A whole layer saves what it runs
        now less what its heads and neurons earlier in the order saved already; those after it save nothing."""
        uniform, removed, out = 0, {tag: {} for tag in self.exact}, []
        layers = self.exact.get("layer")
        inside: dict[int, int] = {}  # encoder layer -> MACs its removed heads and neurons saved
        for tag, layer, _, cost in self.units[:count]:
            if layers is not None and tag in layers.covers:
                if layer in removed["layer"]:
                    cost = 0  # its layer is gone already
                inside[layer] = inside.get(layer, 0) + cost
            if tag in self.exact:
                removed[tag][layer] = removed[tag].get(layer, 0) + 1
            else:
                uniform += cost
            overlap = sum(inside.get(l, 0) for l in removed["layer"]) if layers is not None else 0
            out.append(uniform + sum(m.saved(removed[t]) for t, m in self.exact.items()) - overlap)
        return out

    def info(self, count: int) -> dict[str, Any]:
        extra = {**({"channel_macs": self.unit_macs["conv"]} if "conv" in self.unit_macs else {}),
                 **({"layer_macs": self.unit_macs["layers"]} if "layers" in self.unit_macs else {})}
        return {"dense_macs": self.dense_macs, "macs_before": self.macs, "planned_macs": self.macs_at(count),
                "head_macs": self.head_macs, "neuron_macs": self.neuron_macs, **extra,
                "floor_macs": self.macs_at(len(self.units)), "rule": self.rule}


def removal_order(model: nn.Module, scores: Mapping[str, torch.Tensor | None], *,
                  min_per_layer: Mapping[str, int] | None = None, seconds: float = 1.0) -> RemovalOrder:
    """The units of every kind in `scores` ({kind: (L, W) importances}, e.g. {"heads": ..., "ffn": ...}) in
    removal order; a kind without scores stays. `min_per_layer`: {kind: floor} (default `FLOORS`).
    Cost: one MAC count per kind (per layer for conv channels) plus one for the model (and one for the dense
    architecture when pruned)."""
    from ..cost import count_macs, example_inputs
    from ..units.kinds import KINDS

    unknown = set(scores) - set(KINDS)
    if unknown:
        raise InputError(f"scores for unknown unit kinds {sorted(unknown)}; kinds: {', '.join(KINDS)}")
    floors = {**FLOORS, **(min_per_layer or {})}
    inputs = example_inputs(model, seconds, device=next(model.parameters()).device)
    now = count_macs(model, inputs)["total"]
    dense_model = _dense(model)
    dense = count_macs(dense_model, inputs)["total"] if dense_model is not None else now
    done = plan_of(model)
    priced: list[tuple] = []
    unit_macs, widths, left, floor, order_exact = {}, {}, {}, {}, {}
    for name, unit in KINDS.items():
        if name not in scores or scores[name] is None:
            continue
        kept, widths[name] = unit.kept(model), unit.grid(model)[1]
        left[unit.tag], floor[unit.tag] = [len(ids) for ids in kept], floors.get(name, 0)
        if not any(kept):
            continue
        exact = unit.macs_model(model, inputs)
        if exact is not None:
            order_exact[unit.tag] = exact
        costs = _unit_costs(model, unit, kept, widths[name], done, inputs, now=now, exact=exact)  # {layer: MACs}
        unit_macs[name] = max(costs.values())
        priced += _priced([(l, u) for l, ids in enumerate(kept) for u in ids], scores[name], unit.tag, costs)
    units = []
    for _, tag, layer, unit_id, cost in sorted(priced):
        if left[tag][layer] > floor[tag]:
            left[tag][layer] -= 1
            units.append((tag, layer, unit_id, cost))
    return RemovalOrder(units, dense, now, unit_macs=unit_macs, plan=done, widths=widths, exact=order_exact)


def mac_floor(model: nn.Module, units: tuple[str, ...] = ("heads", "ffn", "conv"), *,
              min_per_layer: Mapping[str, int] | None = None, seconds: float = 1.0) -> dict[str, Any]:
    """The fewest MACs removing `units` can reach: every unit of those kinds down to the per-layer floors
    (heads 0, neurons 1, conv channels 1 by default). {"dense_macs", "macs", "floor_macs", "fraction", "units",
    "plan"}; the plan is what reaches it. Cost: `removal_order`'s (the order does not matter here)."""
    from ..units.kinds import KINDS

    scores = {kind: torch.zeros(*KINDS[kind].grid(model)) for kind in units}
    order = removal_order(model, scores, min_per_layer=min_per_layer, seconds=seconds)
    floor = order.macs_at(len(order.units))
    return {"dense_macs": order.dense_macs, "macs": order.macs, "floor_macs": floor,
            "fraction": floor / order.dense_macs, "units": list(units), "plan": order.plan_at(len(order.units))}


def target_macs_plan(model: nn.Module, scores: Mapping[str, torch.Tensor], target: float, *,
                     min_per_layer: Mapping[str, int] | None = None,
                     seconds: float = 1.0) -> tuple[PruningPlan, dict[str, Any]]:
    """Units of the kinds in `scores` to remove so that the model's MACs are at most `target` x the dense
    model's: the shortest prefix of `removal_order` that meets the budget. Cost: `removal_order`'s."""
    if not math.isfinite(target) or not 0 < target <= 1:
        raise InputError(f"--target-macs must be within (0, 1], got {target}")
    order = removal_order(model, scores, min_per_layer=min_per_layer, seconds=seconds)
    return prefix_plan(order, target, min_per_layer)


def prefix_plan(order: RemovalOrder, target: float,
                min_per_layer: Mapping[str, int] | None = None) -> tuple[PruningPlan, dict[str, Any]]:
    """The shortest prefix of `order` that leaves at most `target` x the dense MACs, and its record."""
    macs_after = [order.macs - saved for saved in [0, *order.savings(len(order.units))]]  # by prefix length
    count = next((n for n, macs in enumerate(macs_after) if macs <= target * order.dense_macs), len(order.units))
    macs = macs_after[count]
    if macs > target * order.dense_macs:
        raise InputError(f"--target-macs {target} is out of reach: removing every unit down to the per-layer "
                         f"floors ({_floors_text(min_per_layer)}) leaves {macs / order.dense_macs:.3f} of the "
                         "dense MACs (the front end and the rest stay); ask for at least that")
    return order.plan_at(count), {"target": target, **order.info(count)}


def max_drop_units_plan(model: nn.Module, order: RemovalOrder, evaluate: Evaluate, max_drop: float, *,
                        progress: Callable[[str], None] | None = None) -> Search:
    """`max_drop_plan` over heads and FFN neurons together: the longest prefix of `order` (cheapest per MAC
    saved first) whose selection metric stays within `max_drop` of the unpruned model's. Each probe gates
    the prefix's heads and neurons (== removal). Cost: about log2(units) + 2 evaluations."""

    def plan_at(count: int) -> tuple[PruningPlan, dict[str, Any], str]:
        plan = order.plan_at(count)
        fields = {"heads_removed": plan.num_pruned, "neurons_removed": plan.num_pruned_ffn, **_extra(order, plan),
                  "mac_fraction": order.macs_at(count) / order.dense_macs}
        channels = f" + {plan.num_pruned_conv} conv channels" if "conv" in order.unit_macs else ""
        layers = f" + {plan.num_pruned_layers} layers" if "layers" in order.unit_macs else ""
        return plan, fields, (f"{plan.num_pruned} heads + {plan.num_pruned_ffn} neurons{channels}{layers} removed "
                              f"({fields['mac_fraction']:.3f} of the MACs)")

    search = bisect_units(model, plan_at, evaluate, max_drop, len(order.units), progress)
    search.extra = {"neurons_removed": search.plan.num_pruned_ffn, **_extra(order, search.plan),
                    "mac_fraction": order.macs_at(search.count) / order.dense_macs, **order.info(search.count)}
    return search


def _extra(order: RemovalOrder, plan: PruningPlan) -> dict[str, int]:
    """The counts of the kinds beyond heads and neurons that `order` ranks."""
    return {**({"channels_removed": plan.num_pruned_conv} if "conv" in order.unit_macs else {}),
            **({"layers_removed": plan.num_pruned_layers} if "layers" in order.unit_macs else {})}


def _floors_text(min_per_layer: Mapping[str, int] | None) -> str:
    floors = {**FLOORS, **(min_per_layer or {})}
    return ", ".join(f"{kind} {floor}" for kind, floor in floors.items())


def _unit_costs(model: nn.Module, unit: Any, kept: list[list[int]], width: int, done: PruningPlan,
                inputs: dict[str, torch.Tensor], *, now: int, exact: Any = None) -> dict[int, int]:
    """{layer: MACs that removing one unit of `unit` there saves}: one count for kinds whose units cost the
    same in every layer (heads, neurons); the marginal cost per layer from the kind's MAC model otherwise
    (conv channels: each layer runs at its own frame rate and kernel)."""
    import copy

    from ..cost import count_macs

    layers = [l for l, ids in enumerate(kept) if ids]
    if exact is not None:
        return {l: exact.saved({l: 1}) for l in layers}
    costs = {}
    for layer in layers[:1]:
        pruned = copy.deepcopy(model)
        unit.remove_(pruned, unit.with_removed(PruningPlan(done.num_layers, done.num_heads), {layer: (kept[layer][0],)},
                                               width))
        costs[layer] = now - count_macs(pruned, inputs)["total"]
    return {l: costs.get(l, costs[layers[0]]) for l in layers}


def _priced(units: list[tuple[int, int]], scores: torch.Tensor, kind: str, costs: Mapping[int, int]) -> list[tuple]:
    """(price, kind, layer, unit, cost) for `units`: the rank quantile of its score among them, in [0, 1],
    per MAC that all of them hold (the sum of their costs, `costs` per layer). Two kinds holding equal MACs
    are cut to equal quantiles; dividing by one unit's cost instead would price a neuron (I = 6144 of them)
    like a head (24) and empty the attention before the first percent of the neurons went."""
    order = sorted(units, key=lambda lu: (float(scores[lu]), lu))
    span = max(len(order) - 1, 1)
    held = max(sum(costs[l] for l, _ in order), 1)
    return [(rank / span / held, kind, l, u, costs[l]) for rank, (l, u) in enumerate(order)]


def _dense(model: nn.Module) -> nn.Module | None:
    """The unpruned architecture (random weights: MACs only), or None when `model` lost nothing."""
    from ..export.pipeline import unpruned_reference

    return unpruned_reference(model)
