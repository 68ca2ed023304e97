"""Feed-forward neurons as a unit kind (their sites, gate and removal live in `prunehead.units.ffn`)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..pruning.plan import PruningPlan, select_ffn
from ..scorers.ffn import score_ffn
from ..specs import Ranking
from .base import Amount, UnitKind
from .ffn import ffn_sites, kept_neurons, neuron_gating, prune_ffn_


class Neurons(UnitKind):
    """Feed-forward neurons as a unit kind: `select_ffn`, `neuron_gating`, `prune_ffn_`, and the taylor /
    magnitude scorers of `prunehead.scorers.ffn`."""

    name, tag, noun, plan_key = "ffn", "ffn", "FFN neurons", "pruned_ffn"
    scorers = ("taylor", "magnitude")
    data_free = ("magnitude",)

    def grid(self, model: nn.Module) -> tuple[int, int]:
        sites = ffn_sites(model)
        return len(sites), sites[0].intermediate_size

    def kept(self, model: nn.Module) -> list[list[int]]:
        return kept_neurons(model)

    def removed(self, plan: PruningPlan) -> dict[int, tuple[int, ...]]:
        return plan.pruned_ffn

    def with_removed(self, plan: PruningPlan, removed: dict[int, tuple[int, ...]], width: int) -> PruningPlan:
        return plan.union(PruningPlan(plan.num_layers, plan.num_heads, pruned_ffn=removed, intermediate_size=width))

    def select(self, scores: torch.Tensor, plan: PruningPlan, amount: Amount) -> PruningPlan:
        if amount.ratio is None:
            raise InputError("FFN neurons are cut by a ratio (--ffn-ratio), not a count per layer")
        return select_ffn(scores, plan, ratio=amount.ratio, scope=amount.scope,
                          min_neurons_per_layer=amount.min_per_layer)

    def gate(self, model: nn.Module, plan: PruningPlan, stack: contextlib.ExitStack) -> None:
        if plan.pruned_ffn:
            stack.enter_context(neuron_gating(model, plan.ffn_keep_mask().to(next(model.parameters()).device)))

    def remove_(self, model: nn.Module, plan: PruningPlan) -> None:
        prune_ffn_(model, plan)

    def score(self, model: nn.Module, batches: list[Any], objective: Any, ranking: Ranking, *,
              task: str | None = None, progress: bool = False) -> torch.Tensor:
        return score_ffn(model, batches, objective, scorer=ranking.scorer)


NEURONS = Neurons()
