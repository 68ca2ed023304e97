"""`l0`: head importance as learned hard concrete gates (Voita et al. 2019, "Analyzing Multi-Head
Self-Attention: Specialized Heads Do the Heavy Lifting, the Rest Can Be Pruned").

Every head gets a gate z ~ HardConcrete(log_alpha) on its output before the output projection (one draw
per sample and step). With the model's weights frozen, the gates' locations are trained by Adam on

    mean task loss  +  penalty x (expected number of open heads) / (L x H)

for `epochs` passes over the scoring samples: a head the loss can do without is cheaper closed. The score is
the learned log_alpha (higher = more important; P(open) is monotone in it). Cost: epochs x (1 forward +
1 backward) per sample.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..control import controlled
from ..heads import head_adapter
from ..training.hard_concrete import HardConcrete
from ..errors import check_int, check_number
from .base import Batch, Objective, Scorer, batch_size, check_loss, forward
from .tools import to_grid


@dataclasses.dataclass
class L0Scorer(Scorer):
    """Voita et al.'s L0 head gates, trained on the scoring samples with the weights frozen."""

    name: ClassVar[str] = "l0"
    epochs: int = 10
    lr: float = 0.05  # Adam step on log_alpha
    penalty: float = 0.01  # loss units for keeping every head open (larger: every gate closes alike)
    init: float = 2.0  # initial log_alpha (P(open) ~ 0.97)
    seed: int = 0

    def __post_init__(self) -> None:  # options checked when built, before anything loads
        check_int("epochs", self.epochs, 1)
        check_number("lr", self.lr, 1e-12)
        check_number("penalty", self.penalty, 0.0)
        check_number("init", self.init)
        check_int("seed", self.seed, 0)

    def _score(self, model: nn.Module, batches: list[Batch], objective: Objective) -> torch.Tensor:
        adapter = head_adapter(model)
        L, H = adapter.num_layers, adapter.num_heads
        device = next(model.parameters()).device
        gates = HardConcrete((L, H), self.init).to(device)
        opt = torch.optim.Adam(gates.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        with controlled(model) as ctl:
            for _ in self._bar(range(self.epochs), "l0 epochs"):
                for batch in batches:
                    B = batch_size(batch)
                    z = gates.sample(B, generator)  # (B, L, H)
                    with torch.enable_grad(), ctl.gating(z):
                        loss = check_loss(objective(forward(model, batch), batch), B).mean()
                        loss = loss + self.penalty * gates.open_probability().mean()
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                    opt.step()
        kept = adapter.kept_heads(model)  # gates index the heads a layer has now: back to original ids
        return to_grid({l: gates.log_alpha.detach()[l:l + 1] for l, ids in enumerate(kept) if ids}, model)[0]
