"""Parameter and MAC counts of a model on given inputs.

MACs come from PyTorch's `torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2) over one forward
pass, so they count what actually runs: every matmul and convolution, wav2vec2 / HuBERT's positional
convolution included (a module-hook counter that matches `type(m) is nn.Conv1d` misses it: weight norm
makes it a parametrized subclass), and the attention core (Q K^T and P V) whether it runs as eager
matmuls or as a fused SDPA kernel. Norms, activations and softmax are not counted. Categories: "conv"
(convolutions), "linear" (2-D matmuls: projections, feed-forward, heads), "attention" (batched matmuls and
SDPA kernels).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .heads import head_adapter

aten = torch.ops.aten
_KIND = {aten.convolution: "conv", aten._convolution: "conv", aten.mm: "linear", aten.addmm: "linear",
         aten.bmm: "attention", aten.baddbmm: "attention"}


def _cpu_sdpa_flop(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any,
                   out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of the CPU flash-attention kernel, which PyTorch's counter does not register (same as SDPA's)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CUSTOM = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad inside the block (restored after).

    Under no_grad a bias-only block's `bias.expand(...)` is still a requires-grad view without a grad_fn,
    which the counter's module tracker cannot hook.
    """
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for param in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, int]:
    """MACs of one forward on `inputs`: {"total", "linear", "conv", "attention"} (FlopCounterMode FLOPs / 2).

    Cost: one forward pass (no gradients).
    """
    with _counting(model) as counter:
        model(**inputs)
    counts: Counter[str] = Counter({"linear": 0, "conv": 0, "attention": 0})
    for op, flops in counter.get_flop_counts()["Global"].items():
        counts[_KIND.get(op, "attention")] += flops // 2  # the rest: SDPA kernels
    return {**counts, "total": sum(counts.values())}


def count_macs_within(model: nn.Module, inputs: dict[str, torch.Tensor], modules: list[nn.Module]) -> list[int]:
    """MACs that run inside each of `modules` (e.g. the encoder layers) in one forward on `inputs`, counted as
    `count_macs` counts them (the counter's running total read before and after each module). Cost: one forward."""
    totals = [0] * len(modules)

    def running() -> int:
        return sum(counter.get_flop_counts()["Global"].values()) // 2

    def enter(i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            totals[i] -= running()
        return hook

    def leave(i: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            totals[i] += running()
        return hook

    with _counting(model) as counter:
        handles = [h for i, m in enumerate(modules)
                   for h in (m.register_forward_pre_hook(enter(i)), m.register_forward_hook(leave(i)))]
        try:
            model(**inputs)
        finally:
            for handle in handles:
                handle.remove()
    return totals


@contextlib.contextmanager
def _counting(model: nn.Module) -> Iterator[FlopCounterMode]:
    """A FlopCounterMode over the block, no gradients, the weights frozen, and the family's routed blocks (equal
    outputs): an unpruned model is counted on the path a pruned one runs."""
    family = head_adapter(model).family  # fails early on unsupported architectures
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM)
    with torch.no_grad(), _frozen(model), family.routed(model), counter:
        yield counter


def example_inputs(model: nn.Module, seconds: float = 1.0, batch: int = 1,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for counting and timing: `seconds` of audio (Whisper: its window; text: 128 tokens)."""
    return head_adapter(model).family.example_inputs(model, seconds, batch, device)
