"""`occlusion`: the change of a metric when one head is gated off (method.md §2.3; HIB Fig. 2 baseline).

For every head: gate it to 0 (output projection bias kept), run the samples, and compare with the
ungated model. Importance = drop of the metric (`by="metric"`, default; e.g. accuracy) with ties broken
by the rise of the mean loss, or the rise of the mean loss alone (`by="loss"`). Heads whose removal helps
get negative importance. A head whose output is already zero gets exactly 0. The score is computed on
the scoring samples, not a test set. `dtype` autocasts the forward passes (prunehead.precision).
Cost: L*H + 1 forward passes per sample, no backward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from ..control import controlled
from ..errors import InputError
from ..heads import head_adapter
from ..precision import autocast, check_dtype
from .base import Batch, Objective, SampleScorer, batch_size, check_loss, forward, model_device

Metric = Callable[[Any, Batch], torch.Tensor]  # (outputs, batch) -> (B,) per-sample metric, higher = better


def gold_accuracy(outputs: Any, batch: Batch) -> torch.Tensor:
    """(B,) 1.0 where the argmax of (B, C) logits equals the gold label in `batch["labels"]`."""
    logits, labels = outputs.logits, batch.get("labels")
    if logits.dim() != 2 or not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:1]:
        raise InputError("occlusion's default metric is classification accuracy; for other tasks pass the "
                         "task's per-sample metric or use by='loss'")
    return (logits.argmax(-1) == labels).float()


@dataclasses.dataclass
class OcclusionScorer(SampleScorer):
    """Metric (or loss) change when a single head is gated off."""

    name: ClassVar[str] = "occlusion"
    by: str = "metric"
    metric: Metric | None = dataclasses.field(default=None, repr=False)
    dtype: str = "float32"  # forward precision: float32 | bfloat16 | float16 (autocast)

    def __post_init__(self) -> None:  # options checked when built, before anything loads
        check_dtype(self.dtype)
        if self.by not in ("metric", "loss"):
            raise InputError(f"occlusion by {self.by!r}: choose 'metric' or 'loss'")

    def _evaluate(self, model: nn.Module, batch: Batch, objective: Objective, ctl: Any, gate: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        with ctl.gating(gate):
            outputs = forward(model, batch)
        loss = check_loss(objective(outputs, batch), batch_size(batch)).detach().cpu().double()  # float64 on the host
        metric = (self.metric or gold_accuracy)(outputs, batch).cpu().double() if self.by == "metric" else loss * 0
        return metric, loss

    def score_batch(self, model: nn.Module, batch: Batch, objective: Objective, ids: torch.Tensor,
                    context: None) -> torch.Tensor:
        """(B, 2, L, H): per-sample metric drop and loss rise for every gated head."""
        adapter = head_adapter(model)
        L, H, B = adapter.num_layers, adapter.num_heads, batch_size(batch)
        out = torch.full((B, 2, L, H), float("nan"), dtype=torch.float64)  # NaN: heads a pruned model lacks
        device = model_device(model)
        gate = torch.ones(L, H, device=device)  # by current head position
        with torch.no_grad(), controlled(model) as ctl, autocast(self.dtype, device):
            base_metric, base_loss = self._evaluate(model, batch, objective, ctl, gate)
            for l, heads in self._bar(list(enumerate(adapter.kept_heads(model))), "occlusion layers"):
                for position, h in enumerate(heads):
                    gate[l, position] = 0.0
                    metric, loss = self._evaluate(model, batch, objective, ctl, gate)
                    gate[l, position] = 1.0
                    out[:, 0, l, h] = base_metric - metric
                    out[:, 1, l, h] = loss - base_loss
        return out

    def reduce(self, results: torch.Tensor) -> torch.Tensor:
        drop, rise = results[:, 0].mean(0), results[:, 1].mean(0)  # (L, H)
        if self.by == "loss":
            return rise
        # Tie-break by loss without reordering different metric values: for a 0/1 metric (accuracy) the
        # mean moves in steps of 1/N, and this term stays strictly inside half a step.
        return drop + torch.tanh(rise) / (2 * results.shape[0] + 1)
