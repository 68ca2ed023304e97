"""Parameter and MAC counts of a model on given inputs.

MACs are counted from one forward pass: every `nn.Linear` and `nn.Conv1d` by its output size, plus the
attention core of each controlled layer (Q K^T and P V: 2 * B * H_l * Lq * Lk * d), which module-level
counters such as torch-pruning's miss. Norms, activations and softmax are not counted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .control import controlled
from .heads import head_adapter


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def _linear_macs(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


def _conv_macs(module: nn.Conv1d, inputs: tuple, output: torch.Tensor) -> int:
    return output.numel() * (module.in_channels // module.groups) * module.kernel_size[0]


def count_macs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, int]:
    """MACs of one forward on `inputs`: {"total", "linear", "conv", "attention"}."""
    counts = {"linear": 0, "conv": 0, "attention": 0}
    kinds = {nn.Linear: ("linear", _linear_macs), nn.Conv1d: ("conv", _conv_macs)}

    def hook(kind: str, fn: Any):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            counts[kind] += fn(module, args, output)
        return record

    handles = [m.register_forward_hook(hook(*kinds[type(m)])) for m in model.modules() if type(m) in kinds]
    adapter = head_adapter(model)
    d = adapter.head_dim
    attention_core = {l: (lambda probs, mask: 2 * probs.numel() * d) for l in range(adapter.num_layers)}
    try:
        with torch.no_grad(), controlled(model) as ctl, ctl.recording(attention_core) as store:
            model(**inputs)
            counts["attention"] = sum(store.values())
    finally:
        for handle in handles:
            handle.remove()
    counts["total"] = sum(counts.values())
    return counts


def example_inputs(model: nn.Module, seconds: float = 1.0, batch: int = 1,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for counting and timing: `seconds` of audio (Whisper: its window; text: 128 tokens)."""
    return head_adapter(model).family.example_inputs(model, seconds, batch, device)
