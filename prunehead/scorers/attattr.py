"""`attattr`: self-attention attribution of Hao et al. 2021 (reference code YRdddream/attattr), method.md §2.1.

For each sample and layer l, the attention probabilities of *all heads of layer l* are replaced by
alpha * A (A = the clean maps, alpha = k/m for k = 0..m-1, the reference's left Riemann sum, zero
baseline); other layers run normally. The gradient of F is taken w.r.t. the scaled probabilities as a
leaf (no gradient through softmax/Q/K), and Attr_h = (A_h / m) * sum_k dF(alpha_k A)/d(alpha_k A)_h.
The head importance is E_x[max_{i,j} Attr_h(i, j)] over the valid block (HIB Eq. 18).

F is the gold-label probability: with a cross-entropy objective, exp(-loss) is exactly the softmax
probability of the gold class (`target="prob"`, default). `target="logprob"` uses F = -loss, the
adaptation method.md proposes for CTC (log p(y|x)); exp(-CTC) is then the `prob` option.
Cost: 1 clean forward + L * m (forward + backward) per sample, the m points batched.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..control import controlled
from ..errors import InputError
from .base import (Batch, Objective, SampleScorer, batch_size, check_loss, clean_attention, forward, index_batch,
                   to_grid)


def target_value(loss: torch.Tensor, target: str) -> torch.Tensor:
    if target == "prob":
        return torch.exp(-loss)
    if target == "logprob":
        return -loss
    raise InputError(f"unknown attattr target {target!r}; choose 'prob' or 'logprob'")


def layer_attribution(model: nn.Module, batch: Batch, objective: Objective, layer: int, probs: torch.Tensor,
                      points: int, target: str = "prob", chunk: int = 0) -> torch.Tensor:
    """(B, H, L, L) integrated-gradients attribution of layer `layer`'s attention maps `probs` (B, H, L, L)."""
    B = batch_size(batch)
    chunk = chunk or points
    total = torch.zeros_like(probs)
    for start in range(0, points, chunk):
        ks = torch.arange(start, min(start + chunk, points), device=probs.device)
        rows = torch.arange(B, device=probs.device).repeat_interleave(len(ks))  # sample-major
        alpha = (ks.repeat(B).to(probs.dtype)) / points  # (B * k,)
        part = index_batch(batch, rows)
        with torch.enable_grad(), controlled(model) as ctl, ctl.scaling(layer, alpha) as scaled:
            loss = check_loss(objective(forward(model, part), part), len(rows))
            (grad,) = torch.autograd.grad(target_value(loss, target).sum(), scaled.leaf)
        total += grad.view(B, len(ks), *grad.shape[1:]).sum(1)
    return probs * total / points


@dataclasses.dataclass
class AttAttrScorer(SampleScorer):
    """Integrated gradients over each layer's attention (m = `points` Riemann points), max over the valid
    block."""

    name: ClassVar[str] = "attattr"
    points: int = 20  # m, the Riemann points of the integral
    target: str = "prob"
    chunk: int = 0  # Riemann points per backward (0 = all m at once)

    def __post_init__(self) -> None:  # options checked when built, before anything loads
        target_value(torch.zeros(1), self.target)
        if self.points < 1:
            raise InputError(f"attattr needs at least 1 integration point, got {self.points}")

    def score_batch(self, model: nn.Module, batch: Batch, objective: Objective, ids: torch.Tensor,
                    context: None) -> torch.Tensor:
        probs, valid = clean_attention(model, batch)
        keep = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, L, L)
        out = {}
        for l in self._bar(sorted(probs), "attattr layers"):
            attr = layer_attribution(model, batch, objective, layer=l, probs=probs[l], points=self.points,
                                     target=self.target, chunk=self.chunk)
            out[l] = attr.masked_fill(~keep, float("-inf")).flatten(2).amax(-1)  # (B, H_l)
        return to_grid(out, model)  # (B, L, H)
