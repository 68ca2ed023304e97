"""`random`: the seeded random baseline (method.md §2.5). Cost: none; the batches are not used."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..heads import head_adapter
from .base import Batch, Objective, Scorer


@dataclasses.dataclass
class RandomScorer(Scorer):
    """Uniform random scores in [0, 1) from `torch.Generator().manual_seed(seed)`; report several seeds."""

    name: ClassVar[str] = "random"
    needs_data: ClassVar[bool] = False
    seed: int = 0

    def _score(self, model: nn.Module, batches: list[Batch], objective: Objective) -> torch.Tensor:
        adapter = head_adapter(model)
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(adapter.num_layers, adapter.num_heads, generator=generator, dtype=torch.float64)
