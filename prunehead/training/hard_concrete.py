"""The hard concrete distribution (Louizos et al. 2018, "Learning Sparse Neural Networks through L0
Regularization"): a gate z in [0, 1] with point masses at 0 and 1, differentiable in its location log_alpha.

    u ~ U(0, 1);  s = sigmoid((log u - log(1 - u) + log_alpha) / beta);  z = clamp(s (zeta - gamma) + gamma, 0, 1)

P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)) is the expected L0 norm (differentiable); at test time
the gate is clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1). Constants as in the paper (beta = 2/3,
gamma = -0.1, zeta = 1.1). Voita et al. 2019 gate attention heads with it; DPHuBERT every structure.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1

__all__ = ["BETA", "GAMMA", "ZETA", "HardConcrete"]


class HardConcrete(nn.Module):
    """Independent hard concrete gates of `shape`, their location `log_alpha` a parameter (init `init`)."""

    def __init__(self, shape: tuple[int, ...], init: float = 2.0):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(shape, float(init)))

    def sample(self, batch: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gates z drawn by the reparameterization: (*shape), or (batch, *shape) with one draw per sample."""
        shape = tuple(self.log_alpha.shape) if batch is None else (batch, *self.log_alpha.shape)
        u = torch.rand(shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(self.log_alpha.device)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate: clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)."""
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def open_probability(self) -> torch.Tensor:
        """P(z != 0) per gate: the expected L0 norm's terms (differentiable in log_alpha)."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))
