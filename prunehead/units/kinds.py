"""The registry of unit kinds, in the order surgery removes them (heads, feed-forward neurons, conv channels,
whole layers last: removing a layer renumbers the others)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import InputError
from ..pruning.plan import PruningPlan
from .base import UnitKind
from .channels import CHANNELS
from .neurons import NEURONS
from .depth import drop_empty_layers_
from .heads import HEADS
from .layers import LAYERS

KINDS: dict[str, UnitKind] = {HEADS.name: HEADS, NEURONS.name: NEURONS, CHANNELS.name: CHANNELS, LAYERS.name: LAYERS}


def kind(name: str) -> UnitKind:
    """The kind registered as `name`; InputError listing the valid names otherwise."""
    if name not in KINDS:
        raise InputError(f"unknown unit kind {name!r}; choose one of: {', '.join(KINDS)}")
    return KINDS[name]


def register_kind(unit: UnitKind) -> UnitKind:
    """Add a unit kind (a plugin, or a test's toy kind); returns it."""
    KINDS[unit.name] = unit
    return unit


def select_kept(name: str, scores: Any, plan: PruningPlan, amount: Any) -> PruningPlan:
    """`plan` plus `name`'s lowest-scoring units up to `amount`, ranked and counted over the encoder layers
    `plan` keeps: heads and neurons of the layers it removes are neither chosen nor counted, so a share is
    of the layers that stay, as when the layers are removed first (select layers before the other kinds)."""
    gone = set(plan.pruned_layers)
    if name not in ("heads", "ffn") or not gone:
        return KINDS[name].select(scores, plan, amount)
    kept = [l for l in range(plan.num_layers) if l not in gone]
    return plan.with_layers(KINDS[name].select(scores[kept], plan.on_layers(kept), amount), kept)


def evaluate_gated(model: nn.Module, plan: PruningPlan, evaluate: Callable[[nn.Module], Any]) -> Any:
    """`evaluate(model)` with every unit of `plan`, of every kind, gated to 0 (== removed)."""
    with contextlib.ExitStack() as stack:
        for unit in KINDS.values():
            unit.gate(model, plan, stack)
        return evaluate(model)


def remove_all_(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Remove every unit of `plan`, kind by kind, from `model` in place; then every layer the plan left with no
    heads and no neurons whose skip is exact (`drop_empty_layers_`)."""
    for unit in KINDS.values():
        if unit.removed(plan):
            unit.remove_(model, plan)
    if plan.pruned_heads and plan.pruned_ffn:
        drop_empty_layers_(model)
    return model
