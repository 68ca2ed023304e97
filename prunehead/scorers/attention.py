"""`attention`: raw attention statistics from one clean forward pass (method.md §2.4).

Per sample, layer and head, over the valid L_v x L_v block of A_O:
* `max` (default): max_{i,j} A(i, j), the attention analogue of HIB Eq. 18;
* `confidence`: Voita et al.'s mean over query frames of max_j A(i, j);
* `entropy`: minus the mean over query frames of the row entropy (run_bertology's measure; it divides
  the sum over all tokens by the token count, here each sample's frames are averaged first so long and
  short utterances weigh the same).
Averaged over samples; higher = more important. `dtype` autocasts the forward pass (prunehead.precision);
the statistics are computed in float32. Cost: 1 forward per sample.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..errors import InputError
from ..precision import autocast, check_dtype
from .base import Batch, Objective, SampleScorer, clean_attention, model_device, to_grid

VARIANTS = ("max", "confidence", "entropy")


def head_statistic(probs: torch.Tensor, valid: torch.Tensor, variant: str) -> torch.Tensor:
    """(B, H) statistic of attention maps probs (B, H, L, L) over valid frames (B, L)."""
    q = valid[:, None, :].to(probs.dtype)  # (B, 1, L) valid query rows
    n = q.sum(-1)  # (B, 1)
    if variant == "max":
        keep = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, L, L)
        return probs.masked_fill(~keep, float("-inf")).flatten(2).amax(-1)
    if variant == "confidence":
        return (probs.amax(-1) * q).sum(-1) / n
    if variant == "entropy":
        plogp = torch.where(probs > 0, probs * probs.clamp_min(1e-30).log(), torch.zeros_like(probs))
        return (plogp.sum(-1) * q).sum(-1) / n  # minus the mean entropy
    raise InputError(f"unknown attention variant {variant!r}; choose one of: {', '.join(VARIANTS)}")


@dataclasses.dataclass
class AttentionScorer(SampleScorer):
    """Mean over samples of a per-head attention statistic (`variant`: max, confidence or entropy)."""

    name: ClassVar[str] = "attention"
    variant: str = "max"
    dtype: str = "float32"  # forward precision: float32 | bfloat16 | float16 (autocast)

    def __post_init__(self) -> None:  # options checked when built, before anything loads
        check_dtype(self.dtype)
        if self.variant not in VARIANTS:
            raise InputError(f"unknown attention variant {self.variant!r}; choose one of: {', '.join(VARIANTS)}")

    def score_batch(self, model: nn.Module, batch: Batch, objective: Objective, ids: torch.Tensor,
                    context: None) -> torch.Tensor:
        with autocast(self.dtype, model_device(model)):
            probs, valid = clean_attention(model, batch)
        return to_grid({l: head_statistic(p.float(), valid, self.variant) for l, p in probs.items()}, model)
