"""WavLM: wav2vec2's layout (`encoder.layers[i].attention`) with its own attention code and a gated
relative position bias (Chen et al. 2022, "WavLM: Large-Scale Self-Supervised Pre-Training for Full Stack
Speech Processing").

Layer 0 embeds the relative positions into a bias for all H heads, (B*H, T, T), and hands it, ungated, to
every later layer. Layer l gates head h's slice with a gate computed from chunk h of its *input* hidden
states (`gru_rel_pos_linear`, `gru_rel_pos_const`), so the gate does not depend on which heads remain.
`WavLMAttention` calls `F.multi_head_attention_forward`, which neither goes through transformers'
attention interface nor runs with fewer heads than the hidden size implies. `WavLMHeadAttention` computes
the same function for any subset of the original heads through `prunehead.attention.prunehead_attention`:
`routed` swaps it in for the duration of `controlled()`, `slice_heads_` / `empty_` for good. Layer 0
keeps its bias table for all original heads whatever it loses, so later layers get the bias they expect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.models.wavlm.modeling_wavlm import WavLMAttention
from transformers.pytorch_utils import prune_linear_layer

from ..attention import prunehead_attention
from .base import AttentionSite, BiasOnly, head_index, output_bias
from .runner import Captured, LayerRunner
from .speech import SpeechFamily


class _RelativeBias(nn.Module):
    """Layer 0's relative position bias for every original head (WavLMAttention.compute_bias)."""

    compute_bias = WavLMAttention.compute_bias
    _relative_positions_bucket = WavLMAttention._relative_positions_bucket

    def _take_bias_table(self, source: nn.Module) -> None:
        if hasattr(source, "rel_attn_embed"):  # layer 0 only
            self.rel_attn_embed = source.rel_attn_embed
            self.num_buckets, self.max_distance = source.num_buckets, source.max_distance

    def full_bias(self, position_bias: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
        """The ungated bias (B*H, T, T) that later layers receive: `position_bias`, or layer 0's own."""
        if position_bias is not None:
            return position_bias
        if not hasattr(self, "rel_attn_embed"):
            raise RuntimeError("a WavLM layer other than the first was called without a position bias")
        values = self.compute_bias(length, length)  # (H, T, T)
        return values.unsqueeze(0).repeat(batch, 1, 1, 1).view(-1, length, length)  # (B*H, T, T)


class WavLMHeadAttention(_RelativeBias):
    """WavLMAttention for the original heads `heads` (ids, in weight order), through prunehead's attention.

    Holds the original module's parameters (the same objects until `keep_` slices them).
    """

    is_causal = False  # read by the SDPA delegate

    def __init__(self, source: WavLMAttention | WavLMHeadAttention):
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj", "gru_rel_pos_linear"):
            setattr(self, name, getattr(source, name))
        self.gru_rel_pos_const = source.gru_rel_pos_const  # (1, H_l, 1, 1)
        self._take_bias_table(source)
        self.head_dim, self.scaling, self.dropout = source.head_dim, source.scaling, source.dropout
        self.heads: list[int] = list(getattr(source, "heads", range(source.num_heads)))
        self.num_heads = len(self.heads)
        self.eager = False  # plain matmul/softmax attention, for export
        self.train(source.training)  # (a fresh module is in training mode: attention dropout would be on)

    def keep_(self, positions: list[int]) -> None:
        """Keep the heads at `positions` (current order): q/k/v rows, output columns, gate constants."""
        index = head_index(positions, self.head_dim, self.out_proj.weight.device)
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(self, name, prune_linear_layer(getattr(self, name), index, dim=0))
        self.out_proj = prune_linear_layer(self.out_proj, index, dim=1)
        const = self.gru_rel_pos_const
        self.gru_rel_pos_const = nn.Parameter(const.detach()[:, positions].clone(), requires_grad=const.requires_grad)
        self.heads = [self.heads[p] for p in positions]
        self.num_heads = len(self.heads)

    def gated_bias(self, hidden_states: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """(B, H_l, T, T) bias of the kept heads, each gated from its own chunk of the input (as WavLMAttention)."""
        B, T, D = hidden_states.shape
        total = D // self.head_dim  # the original head count: the gate always reads the original chunks
        chunks = hidden_states.view(B, T, total, self.head_dim).permute(0, 2, 1, 3)  # (B, H, T, d)
        bias = position_bias.view(B, total, T, T)  # (B, H, T, T)
        if self.num_heads != total:
            chunks, bias = chunks[:, self.heads], bias[:, self.heads]  # (B, H_l, T, d), (B, H_l, T, T)
        proj = self.gru_rel_pos_linear(chunks).view(B, self.num_heads, T, 2, 4).sum(-1)  # (B, H_l, T, 2)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)  # (B, H_l, T, 1) each
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H_l, T, 1)
        return gate * bias  # (B, H_l, T, T)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_bias: torch.Tensor | None = None, **kwargs: Any,
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Returns (output (B, T, D), probabilities (B, H_l, T, T) or None, ungated bias (B*H, T, T))."""
        B, T, _ = hidden_states.shape
        position_bias = self.full_bias(position_bias, B, T)
        bias = self.gated_bias(hidden_states, position_bias)  # (B, H_l, T, T)
        q, k, v = (proj(hidden_states).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H_l, T, d) each
        mask = padding_mask(attention_mask, T, q.dtype)  # (B, 1, T, T) or None
        if self.eager:
            out, probs = eager_attention(q, k, v, mask, bias, self.scaling)
        else:
            out, probs = prunehead_attention(self, q, k, v, mask, scaling=self.scaling, position_bias=bias,
                                             dropout=self.dropout if self.training else 0.0)
        out = self.out_proj(out.reshape(B, T, self.num_heads * self.head_dim))  # (B, T, D)
        return out, probs, position_bias


class WavLMEmptyAttention(_RelativeBias):
    """A WavLM block with no heads: out_proj's bias at every frame; layer 0 still makes the position bias."""

    def __init__(self, source: nn.Module):
        super().__init__()
        self.out_proj = BiasOnly(output_bias(source.out_proj))
        self._take_bias_table(source)
        self.train(source.training)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_bias: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None, torch.Tensor]:
        B, T, _ = hidden_states.shape
        return self.out_proj(hidden_states), None, self.full_bias(position_bias, B, T)


def padding_mask(attention_mask: torch.Tensor | None, length: int, dtype: torch.dtype) -> torch.Tensor | None:
    """WavLM's (B, T) frame mask (1 = valid) as the additive key mask (B, 1, T, T) the controller expects."""
    if attention_mask is None:
        return None
    padded = attention_mask.ne(1)[:, None, None, :]  # (B, 1, 1, T), like WavLM's key_padding_mask
    zeros = torch.zeros(attention_mask.shape[0], 1, length, length, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(padded, torch.finfo(dtype).min)  # (B, 1, T, T)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                    bias: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling + bias + mask) v: ((B, T, H, d), probs (B, H, T, T)); the exported graph."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling + bias  # (B, H, T, T)
    if mask is not None:
        scores = scores + mask
    probs = scores.softmax(-1)
    return torch.matmul(probs, v).transpose(1, 2).contiguous(), probs  # (B, T, H, d)


@dataclass
class WavLMLayerRunner(LayerRunner):
    """LayerRunner whose layers get the position bias for the rows present (it is the same for every row)."""

    num_heads: int = 0  # the original H: the captured bias is (B*H, T, T)

    def run_layers(self, entering: list[torch.Tensor | None], extras: list[Captured | None]) -> torch.Tensor:
        present, fitted = 0, []
        for rows, extra in zip(entering, extras):
            present += 0 if rows is None else rows.shape[0]
            fitted.append(extra if extra is None else self._fit(extra, present))
        return super().run_layers(entering, fitted)

    def _fit(self, extra: Captured, rows: int) -> Captured:
        args, kwargs = extra
        bias = kwargs.get("position_bias")
        if bias is None:
            return extra
        one = bias[: self.num_heads]  # (H, T, T): sample 0's copy of the row-independent bias
        return args, {**kwargs, "position_bias": one.repeat(rows, 1, 1)}  # (rows*H, T, T)


class WavLMFamily(SpeechFamily):
    name = "wavlm"
    model_types = ("wavlm",)

    def fixed_layers(self, model: nn.Module) -> frozenset[int]:
        return frozenset({0})  # it embeds the relative positions for every later layer

    def slice_heads_(self, site: AttentionSite, positions: list[int], head_dim: int) -> None:
        module = site.module if isinstance(site.module, WavLMHeadAttention) else WavLMHeadAttention(site.module)
        module.keep_(positions)
        setattr(site.owner, site.attr, module)

    def empty_(self, site: AttentionSite) -> None:
        setattr(site.owner, site.attr, WavLMEmptyAttention(site.module))

    @contextlib.contextmanager
    def routed(self, model: nn.Module) -> Iterator[None]:
        """Every unpruned WavLMAttention is a WavLMHeadAttention on the same parameters inside the block."""
        swapped = [layer for layer in self.layers(model) if type(layer.attention) is WavLMAttention]
        originals = [layer.attention for layer in swapped]
        try:
            for layer in swapped:
                layer.attention = WavLMHeadAttention(layer.attention)
            yield
        finally:
            for layer, original in zip(swapped, originals):
                layer.attention = original

    @contextlib.contextmanager
    def exportable(self, model: nn.Module) -> Iterator[None]:
        """Every block on `eager_attention` (WavLMAttention's `F.multi_head_attention_forward` included)."""
        with super().exportable(model), self.routed(model):
            heads = [layer.attention for layer in self.layers(model) if isinstance(layer.attention, WavLMHeadAttention)]
            try:
                for module in heads:
                    module.eager = True
                yield
            finally:
                for module in heads:
                    module.eager = False

    def runner(self, model: nn.Module) -> LayerRunner | None:
        runner = super().runner(model)
        if runner is None:
            return None
        return WavLMLayerRunner(runner.layers, runner.owner, runner.attr, runner.post, self.num_heads(model.config))
