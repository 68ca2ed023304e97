"""The contract of a unit kind: one kind of thing a plan removes (attention heads, feed-forward neurons,
conv channels).

A kind knows its grid on a model (L layers x W units per layer, original ids), which units a model still
has, how a `PruningPlan` records it, how to choose the lowest-scoring units (`select`), how to gate them
to 0 (for evaluating a plan without surgery: gating == removal) and remove them for good, and how to score
them. Selection, budgets, curves and the frontier iterate over `prunehead.units.kinds.KINDS`; adding a
kind is one module with a `UnitKind` subclass, its entry there, and its sites in the families.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..pruning.plan import PruningPlan, removal_mask
from ..specs import Ranking


@dataclass(frozen=True)
class Amount:
    """How many units of one kind a cut removes: `ratio` of all (global) or of each layer (per layer), or
    `count` per layer; never leaving a layer with fewer than `min_per_layer`."""

    ratio: float | None = None
    count: int | None = None
    scope: str = "global"
    min_per_layer: int = 0


class UnitKind:
    """One kind of prunable unit. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]  # registry key, score-file "units", --units value: "heads", "ffn"
    tag: ClassVar[str]  # the kind as removal orders list it: "head", "ffn"
    noun: ClassVar[str]  # for messages: "heads", "FFN neurons"
    plan_key: ClassVar[str]  # where plan.json records it: "pruned_heads", "pruned_ffn"
    scorers: ClassVar[tuple[str, ...]] = ()  # the built-in scorers that rank it (empty: the scorer registry)
    data_free: ClassVar[tuple[str, ...]] = ()  # of those, the ones that read the weights only
    uniform_cost: ClassVar[bool] = True  # removing one unit saves the same MACs in every layer

    def grid(self, model: nn.Module) -> tuple[int, int]:
        """(L, W): layers and units per layer as configured (original ids 0..W-1)."""
        raise NotImplementedError

    def kept(self, model: nn.Module) -> list[list[int]]:
        """Original ids of the units each layer still has."""
        raise NotImplementedError

    def removed(self, plan: PruningPlan) -> dict[int, tuple[int, ...]]:
        """{layer: original ids} of this kind that `plan` removes."""
        raise NotImplementedError

    def with_removed(self, plan: PruningPlan, removed: dict[int, tuple[int, ...]], width: int) -> PruningPlan:
        """`plan` plus the units `removed` ({layer: ids}) of this kind, on a grid `width` wide."""
        raise NotImplementedError

    def keep_mask(self, plan: PruningPlan, grid: tuple[int, int]) -> torch.Tensor:
        """(L, W) float mask on `grid`: 0 where `plan` removes a unit of this kind, 1 elsewhere."""
        return removal_mask(self.removed(plan), grid)

    def select(self, scores: torch.Tensor, plan: PruningPlan, amount: Amount) -> PruningPlan:
        """`plan` plus this kind's lowest-scoring units up to `amount` (`plan`'s own units count)."""
        raise NotImplementedError

    def gate(self, model: nn.Module, plan: PruningPlan, stack: contextlib.ExitStack) -> None:
        """Enter, on `stack`, the contexts that gate this kind's units of `plan` to 0."""
        raise NotImplementedError

    def remove_(self, model: nn.Module, plan: PruningPlan) -> None:
        """Remove this kind's units of `plan` from `model` in place (surgery)."""
        raise NotImplementedError

    def macs_model(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
        """For kinds whose removals interact (`uniform_cost` False): an object whose `saved({layer: n})` is the
        exact MACs saved by removing n more units per layer; None for independent units."""
        return None

    def score(self, model: nn.Module, batches: list[Any], objective: Any, ranking: Ranking, *,
              task: str | None = None, progress: bool = False) -> torch.Tensor:
        """(L, W) importances of every unit by `ranking.scorer` (its options, seed; the `task`'s defaults),
        higher = more important."""
        raise NotImplementedError
