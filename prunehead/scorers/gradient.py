"""`gradient`: head importance of Michel et al. 2019 (HF run_bertology), method.md §2.2.

Each sample gets its own all-ones gate xi (B, L, H) on the head outputs before the output projection;
one backward of the summed per-sample loss gives every sample's dL/dxi, and the importance is
E_x |dL/dxi_h| (the reference's batch-size-1 loop, batched exactly). Then, as in the reference, each
layer's row is L2-normalized (`normalize_layers`) and the matrix min-max scaled to [0, 1] (`minmax`);
the reference's division by the token count is a constant and is replaced by the mean over samples.
`dtype` ("float32" | "bfloat16" | "float16") autocasts the forward pass (prunehead.precision).
Cost: 1 forward + 1 backward per sample.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..control import controlled
from ..heads import head_adapter
from ..precision import autocast, check_dtype
from .base import Batch, Objective, SampleScorer, batch_size, check_loss, forward, model_device, to_grid


def per_sample_gate_grads(model: nn.Module, batch: Batch, objective: Objective, dtype: str = "float32",
                          ) -> torch.Tensor:
    """(B, L, H) dL_b/dxi_b of each sample's loss w.r.t. its own head gates (all ones).

    Gates index the heads a layer has now (for a pruned model, the first H_l positions of each row).
    The forward pass runs in precision `dtype` (autocast), the gradient w.r.t. the float32 gates.
    """
    adapter = head_adapter(model)
    B = batch_size(batch)
    device = model_device(model)
    gate = torch.ones(B, adapter.num_layers, adapter.num_heads, device=device, requires_grad=True)
    with torch.enable_grad(), controlled(model) as ctl, ctl.gating(gate):
        with autocast(dtype, device):
            loss = check_loss(objective(forward(model, batch), batch), B)
        (grad,) = torch.autograd.grad(loss.float().sum(), gate)
    return grad


@dataclasses.dataclass
class GradientScorer(SampleScorer):
    """Michel et al.'s |dL/dgate| importance, layer-normalized."""

    name: ClassVar[str] = "gradient"
    normalize_layers: bool = True
    minmax: bool = True
    dtype: str = "float32"  # forward precision: float32 | bfloat16 | float16 (autocast)

    def __post_init__(self) -> None:  # options checked when built, before anything loads
        check_dtype(self.dtype)

    def score_batch(self, model: nn.Module, batch: Batch, objective: Objective, ids: torch.Tensor,
                    context: None) -> torch.Tensor:
        grads = per_sample_gate_grads(model, batch, objective, self.dtype).abs()  # (B, L, H) by position
        kept = head_adapter(model).kept_heads(model)
        return to_grid({l: grads[:, l, :len(h)] for l, h in enumerate(kept) if h}, model)

    def reduce(self, results: torch.Tensor) -> torch.Tensor:
        importance = results.mean(0)  # (L, H); NaN = a head a pruned model no longer has
        if self.normalize_layers:
            importance = importance / (importance.nan_to_num(0.0).norm(dim=1, keepdim=True) + 1e-20)
        if self.minmax:
            present = importance[~importance.isnan()]
            low, high = present.min(), present.max()
            importance = (importance - low) / (high - low) if high > low else importance * 0
        return importance
