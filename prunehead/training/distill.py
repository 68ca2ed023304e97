"""Distillation from the unpruned model: a task whose per-sample objective adds the teacher's soft labels and
hidden states to the student's own loss (`prunehead.specs.Distill` states the loss).

`DistillTask(task, teacher, settings, student)` stands in for the task in the training loop: the loop calls
the student with `model_inputs(batch)` (hidden states on) and `objective(outputs, batch)`, which runs the
frozen teacher on the same batch. Layers are matched by their original ids (`prunehead.units.depth`), so a
student that lost whole layers still meets the teacher layers it came from.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..specs import Distill
from ..units.depth import encoder_layers, original_layer_ids

__all__ = ["DistillTask", "distill_loss", "layer_map"]


def layer_map(student: nn.Module, teacher: nn.Module, layers: str = "all") -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs to match, by original layer id: "all", "last", "none" or a comma
    list of student layer ids (current ids)."""
    teacher_of = {orig: t for t, orig in enumerate(original_layer_ids(teacher))}
    pairs = [(s, teacher_of[orig]) for s, orig in enumerate(original_layer_ids(student)) if orig in teacher_of]
    if layers == "all":
        return pairs
    if layers == "none":
        return []
    if layers == "last":
        return pairs[-1:]
    wanted = [int(part) for part in layers.split(",")]
    known = dict(pairs)
    missing = [s for s in wanted if s not in known]
    if missing:
        raise InputError(f"--distill-layers {layers}: the student has no layer {missing} that the teacher has "
                         f"(student layers 0..{len(encoder_layers(student)) - 1})")
    return [(s, known[s]) for s in wanted]


def _states(outputs: Any) -> tuple[torch.Tensor, ...]:
    """The encoder's hidden states of a model output: (embeddings, layer 0's output, ...), each (B, T, D)."""
    states = getattr(outputs, "hidden_states", None) or getattr(outputs, "encoder_hidden_states", None)
    if states is None:
        raise InputError("the model returns no hidden states; distil with --distill-layers none")
    return states


def distill_loss(student: Any, teacher: Any, settings: Distill, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """(B,) soft-label and hidden-state terms of the distillation loss (the task loss is added by the caller).

    Soft labels: T^2 KL(p_teacher^T || p_student^T) over the last axis of the logits ((B, C), or (B, T, V) per
    frame / token, averaged over positions). Hidden: per pair, mean over (T, D) of the squared error, over the
    teacher state's mean square; averaged over pairs.
    """
    T = settings.temperature
    s_logits, t_logits = student.logits.float(), teacher.logits.float()  # (B, ..., C)
    kl = F.kl_div(F.log_softmax(s_logits / T, -1), F.log_softmax(t_logits / T, -1), log_target=True,
                  reduction="none").sum(-1)  # (B, ...)
    loss = T * T * kl.reshape(kl.shape[0], -1).mean(-1)  # (B,)
    if pairs and settings.hidden > 0:
        s_states, t_states = _states(student), _states(teacher)
        terms = []
        for s, t in pairs:
            h_s, h_t = s_states[s + 1].float(), t_states[t + 1].float()  # (B, T, D): layer outputs
            scale = h_t.pow(2).mean(dim=(1, 2)).clamp(min=1e-12)  # (B,)
            terms.append((h_s - h_t).pow(2).mean(dim=(1, 2)) / scale)
        loss = loss + settings.hidden * torch.stack(terms).mean(0)
    return loss


class DistillTask:
    """`task` with the distillation terms added to its objective; everything else is `task`'s."""

    def __init__(self, task: Any, teacher: nn.Module, settings: Distill, student: nn.Module):
        self.task, self.teacher, self.settings = task, teacher.eval(), settings  # run under no_grad: no graph
        self.pairs = layer_map(student, teacher, settings.layers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        inputs = self.task.model_inputs(batch)
        return {**inputs, "output_hidden_states": True} if self.pairs and self.settings.hidden > 0 else inputs

    def objective(self, outputs: Any, batch: dict[str, Any]) -> torch.Tensor:
        """(B,) labels x task loss + soft labels + hidden x distance, the teacher run on the same batch."""
        with torch.no_grad():
            device = next(self.teacher.parameters()).device
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.model_inputs(batch).items()}
            teacher = self.teacher(**inputs)
        loss = distill_loss(outputs, teacher, self.settings, self.pairs)
        if self.settings.labels > 0:
            loss = loss + self.settings.labels * self.task.objective(outputs, batch)
        return loss
