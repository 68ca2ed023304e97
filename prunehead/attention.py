"""The one attention function prunehead registers with transformers, and its per-model `Controller`.

`prunehead_attention` records, gates, replaces and scales heads of the blocks a `Controller` is attached to
(`prunehead.control.controlled` attaches one); elsewhere it is SDPA. This module knows no architecture, so
the families can route their own attention blocks through it without importing the rest of prunehead.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import eager_mask

NAME = "prunehead"

# Reducer(probs (B,H,Lq,Lk), additive mask (B,1,Lq,Lk) or None) -> what gets stored for the layer.
Reducer = Callable[[torch.Tensor, "torch.Tensor | None"], Any]
# Replacement(probs, value, mask) -> (head outputs (B,H,Lq,d), probabilities used (B,H,Lq,Lk)).
Replacement = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class Scaling:
    """Integrated-gradients state for one layer: probs are replaced by the leaf `alpha * A` (alpha: (B,))."""

    layer: int
    alpha: torch.Tensor
    leaf: torch.Tensor | None = None


@dataclass
class Controller:
    """What the attention function does for one model, per layer (0-based encoder layer index)."""

    num_layers: int
    gate: torch.Tensor | None = None  # (L, H) or (B, L, H); H = the widest layer, a layer uses [:H_l]
    record: dict[int, Reducer] = field(default_factory=dict)
    store: dict[int, Any] = field(default_factory=dict)
    replace: dict[int, Replacement] = field(default_factory=dict)
    scale: Scaling | None = None

    def active_for(self, layer: int) -> bool:
        return (self.gate is not None or layer in self.record or layer in self.replace
                or (self.scale is not None and self.scale.layer == layer))

    @contextlib.contextmanager
    def gating(self, gate: torch.Tensor) -> Iterator[None]:
        """Multiply head outputs by `gate` ((L, H) or per-sample (B, L, H)) before the output projection."""
        previous, self.gate = self.gate, gate
        try:
            yield
        finally:
            self.gate = previous

    @contextlib.contextmanager
    def recording(self, reducers: dict[int, Reducer]) -> Iterator[dict[int, Any]]:
        """Store `reducer(probs, mask)` per layer of each forward in the yielded dict (last forward wins)."""
        previous, prev_store = self.record, self.store
        self.record, self.store = {**previous, **reducers}, {}
        try:
            yield self.store
        finally:
            self.record, self.store = previous, prev_store

    @contextlib.contextmanager
    def replacing(self, replacements: dict[int, Replacement]) -> Iterator[None]:
        """Compute the head outputs of the given layers with `replacement(probs, value, mask)`."""
        previous, self.replace = self.replace, {**self.replace, **replacements}
        try:
            yield
        finally:
            self.replace = previous

    @contextlib.contextmanager
    def scaling(self, layer: int, alpha: torch.Tensor) -> Iterator[Scaling]:
        """Replace layer `layer`'s probabilities by a leaf `alpha[b] * A` (AttAttr, method.md §2.1)."""
        previous, self.scale = self.scale, Scaling(layer, alpha)
        try:
            yield self.scale
        finally:
            self.scale = previous


# module -> (controller, layer); weak so that dropped models leave nothing behind.
SITES: weakref.WeakKeyDictionary[nn.Module, tuple[Controller, int]] = weakref.WeakKeyDictionary()


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype, kv_len: int) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:  # tolerate boolean (sdpa-style) masks: True = attend
        mask = torch.zeros_like(mask, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return mask[:, :, :, :kv_len]


def prunehead_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float | None = None,
                        dropout: float = 0.0, position_bias: torch.Tensor | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The registered attention function. Shapes: q/k/v (B, H, L, d); returns ((B, L, H, d), probs).

    `position_bias` (B, H, Lq, Lk), e.g. WavLM's gated relative bias, is added to the scores like the
    padding mask, but recorders and replacements see only the padding mask (HIB's A_r replaces the scores).
    """
    ctl, layer = SITES.get(module, (None, -1))
    if ctl is None or not ctl.active_for(layer):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, position_bias=position_bias, **kwargs)
    B, H, Lq, d = query.shape
    scaling = d**-0.5 if scaling is None else scaling
    mask = _float_mask(attention_mask, query.dtype, key.shape[-2])
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, Lk)
    if position_bias is not None:
        scores = scores + position_bias
    if mask is not None:
        scores = scores + mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)

    if layer in ctl.record:
        ctl.store[layer] = ctl.record[layer](probs.detach(), mask)
    used = probs
    if ctl.scale is not None and ctl.scale.layer == layer:
        used = (ctl.scale.alpha.view(-1, 1, 1, 1) * probs.detach()).requires_grad_(True)
        ctl.scale.leaf = used
    if layer in ctl.replace:
        out, used = ctl.replace[layer](used, value, mask)  # (B, H, Lq, d), (B, H, Lq, Lk)
    else:
        out = torch.matmul(used, value)  # (B, H, Lq, d)
    if ctl.gate is not None:
        g = ctl.gate[..., layer, :H]  # (H,) or (B, H)
        out = out * g.reshape(-1, H, 1, 1).to(device=out.device, dtype=out.dtype)  # a CPU mask works on any device
    return out.transpose(1, 2).contiguous(), used  # (B, Lq, H, d)


def register() -> None:
    AttentionInterface.register(NAME, prunehead_attention)
    AttentionMaskInterface.register(NAME, eager_mask)  # without it, padding masks silently become None


register()
