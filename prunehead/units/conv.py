"""Convolution channels of the front end: their layout, a channel gate, and removal through torch-pruning.

The wav2vec2-family feature encoder is a stack of Conv1d layers (`Family.conv_layers`); Whisper has one
prunable convolution (conv1, whose channels feed conv2). Output channel c of conv layer l is a unit. Which
modules it touches is found by torch-pruning's dependency graph, traced once on the family's example input
(`Family.conv_root`): the conv's weight row (and bias), the norm after it (per-channel GroupNorm or
LayerNorm over the channels), and its consumers: the next conv's input column, or the feature
projection's LayerNorm and Linear.

Gating channel c multiplies the consumers' input c by 0 and computes every LayerNorm of the group over the
kept channels only, which is exactly what removal gives (a per-channel GroupNorm needs nothing). Removed
channels are recorded in `config.prunehead_pruned_conv` ({"<layer>": [original ids]}); families whose
config states the widths (`conv_dim`) get them rewritten, so a model pruned only here is a plain checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from ..errors import InputError, UnsupportedModelError
from ..families import family_of
from ..portable.template import PRUNED_CONV_KEY  # config.json: {"<layer>": [original channel ids]}

__all__ = ["PRUNED_CONV_KEY", "ChannelMacs", "ConvWiring", "channel_gating", "channel_macs", "conv_layers",
           "conv_plan_of", "conv_wiring", "dense_config", "kept_channels", "original_widths", "prune_conv_", "pruned_conv_of"]


@dataclass(frozen=True)
class ConvWiring:
    """What channel c of one conv layer touches, as module names under the family's `conv_root`."""

    conv: str
    norms: tuple[str, ...]  # LayerNorms over the channels (GroupNorms are per channel and need no gate)
    consumers: tuple[str, ...]  # Conv1d (input (B, C, T)) or Linear (input (..., C)) reading the channels


def conv_layers(model: nn.Module) -> list[nn.Conv1d]:
    """The prunable convolutions of `model`, in order (asks the model's family)."""
    return family_of(model).conv_layers(model)


def pruned_conv_of(model: nn.Module) -> dict[int, list[int]]:
    """Original ids of the channels already removed from `model`, per conv layer (from its config)."""
    raw = getattr(getattr(model, "config", None), PRUNED_CONV_KEY, None) or {}
    return {int(layer): sorted(int(i) for i in ids) for layer, ids in raw.items()}


def original_widths(model: nn.Module) -> list[int]:
    """Every conv layer's channel count before any removal."""
    family, pruned = family_of(model), pruned_conv_of(model)
    widths = family.conv_widths(model.config)
    if family.conv_widths_in_config:  # the config states the pruned widths
        widths = [w + len(pruned.get(l, ())) for l, w in enumerate(widths)]
    return widths


def kept_channels(model: nn.Module) -> list[list[int]]:
    """Original ids of the channels each conv layer still has, in their order in the weights.

    Raises:
        InputError: a layer's width disagrees with the record in its config (changed outside prunehead).
    """
    pruned, kept = pruned_conv_of(model), []
    for layer, (conv, width) in enumerate(zip(conv_layers(model), original_widths(model))):
        ids = [i for i in range(width) if i not in pruned.get(layer, ())]
        if conv.out_channels != len(ids):
            raise InputError(f"conv layer {layer} has {conv.out_channels} channels but its config records {len(ids)}; "
                             "prune convolution channels only with prunehead")
        kept.append(ids)
    return kept


_WIRING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def conv_wiring(model: nn.Module) -> list[ConvWiring]:
    """The modules each conv layer's channels touch (torch-pruning's dependency graph; cached per model and
    layout). Cost: one traced forward on the family's example input, the first time."""
    key = tuple(tuple(c.weight.shape) for c in conv_layers(model))
    cached = _WIRING.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    root, graph = _graph(model)
    names = {module: name for name, module in root.named_modules()}
    wiring = []
    for conv in conv_layers(model):
        norms, consumers = [], []
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        for dep, idxs in group:
            module, handler = dep.target.module, dep.handler.__name__
            if module is conv or not isinstance(module, nn.Module) or type(module).__module__.startswith("torch_pruning"):
                continue
            if list(idxs) != list(range(conv.out_channels)):
                raise UnsupportedModelError(f"{names[module]} reads the channels of {names[conv]} reordered; "
                                            "prunehead prunes channels that map one to one")
            if isinstance(module, nn.LayerNorm):
                norms.append(names[module])
            elif isinstance(module, nn.GroupNorm) and module.num_groups != module.num_channels:
                raise UnsupportedModelError(f"{names[module]} normalizes groups of channels; only per-channel "
                                            "group norms can lose channels")
            elif handler == "prune_in_channels" and isinstance(module, (nn.Conv1d, nn.Linear)):
                consumers.append(names[module])
            elif not isinstance(module, nn.GroupNorm):
                raise UnsupportedModelError(f"the channels of {names[conv]} reach {names[module]} "
                                            f"({type(module).__name__}), which prunehead cannot gate")
        wiring.append(ConvWiring(names[conv], tuple(norms), tuple(consumers)))
    _WIRING[model] = (key, wiring)
    return wiring


def _graph(model: nn.Module) -> tuple[nn.Module, tp.DependencyGraph]:
    """(the family's conv root, its dependency graph traced on the example input, without gradients kept)."""
    family = family_of(model)
    root, inputs = family.conv_root(model), family.conv_inputs(model)
    flags = {p: p.requires_grad for p in root.parameters()}
    try:
        for p in flags:
            p.requires_grad_(True)  # autograd records only ops on tensors that require grad
        with warnings.catch_warnings(), torch.enable_grad():  # the graph is traced through autograd
            warnings.simplefilter("ignore")  # torch-pruning warns about parameters it does not prune
            graph = tp.DependencyGraph().build_dependency(root, example_inputs=inputs)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return root, graph


@contextlib.contextmanager
def channel_gating(model: nn.Module, gate: torch.Tensor) -> Iterator[None]:
    """Inside the block conv channel c of layer l is scaled by `gate[..., l, c]` where it is read, on the
    original channel grid; LayerNorms over the channels weigh them by the gate (0: left out), so a 0/1 gate
    equals removal exactly.

    `gate` is (L, W) or per sample (B, L, W); gradients flow to it. Hooks are removed on exit.
    """
    kept, wiring = kept_channels(model), conv_wiring(model)
    L, W = len(kept), max(original_widths(model))
    if tuple(gate.shape[-2:]) != (L, W) or gate.dim() not in (2, 3):
        raise InputError(f"the channel gate must be (L, W) = ({L}, {W}) or (B, {L}, {W}), got {tuple(gate.shape)}")
    root = family_of(model).conv_root(model)
    handles = []
    try:
        for layer, (ids, wired) in enumerate(zip(kept, wiring)):
            row = gate[..., layer, :].index_select(-1, torch.tensor(ids, dtype=torch.long, device=gate.device))
            for name in wired.consumers:
                handles.append(root.get_submodule(name).register_forward_pre_hook(_scale(row)))
            for name in wired.norms:
                handles.append(root.get_submodule(name).register_forward_hook(_weighted_norm(row)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _shaped(row: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """`row` ((C,) or (B, C)) shaped to broadcast against `x` along `channel_dim`."""
    shape = [1] * x.dim()
    shape[channel_dim] = row.shape[-1]
    if row.dim() == 2:
        shape[0] = row.shape[0]
    return row.to(x.device, x.dtype).reshape(shape)


def _scale(row: torch.Tensor):
    """A pre-hook scaling a consumer's input channels: Conv1d (B, C, T) on dim 1, Linear (..., C) on the last."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        (x, *rest) = args
        return (x * _shaped(row, x, 1 if isinstance(module, nn.Conv1d) else -1), *rest)

    return hook


def _weighted_norm(row: torch.Tensor):
    """A forward hook recomputing a LayerNorm over the channels with weights `row` (0: the channel is absent)."""

    def hook(module: nn.LayerNorm, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]  # (..., C)
        w = _shaped(row, x, -1)
        n = w.sum(-1, keepdim=True).clamp_min(1e-12)
        mean = (x * w).sum(-1, keepdim=True) / n
        var = ((x - mean).pow(2) * w).sum(-1, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + module.eps)
        return y * module.weight + module.bias if module.elementwise_affine else y

    return hook


def prune_conv_(model: nn.Module, removed: dict[int, tuple[int, ...]]) -> nn.Module:
    """Remove the conv channels `removed` ({layer: original ids}) from `model` in place (gone ones skipped).

    One torch-pruning group per layer (the conv's rows, its norm, the consumers' columns); per-channel
    GroupNorms keep one group per channel; the family rewrites the widths its config states. Cost: one
    traced forward.
    """
    kept = kept_channels(model)
    if any(not 0 <= layer < len(kept) for layer in removed):
        raise InputError(f"the plan removes channels of conv layers {sorted(removed)} but the model has "
                         f"{len(kept)}; make the plan for this model")
    todo = {l: [p for p, i in enumerate(kept[l]) if i in set(ids)] for l, ids in removed.items()}
    if not any(todo.values()):
        return model
    if any(len(p) >= len(kept[l]) for l, p in todo.items()):
        raise InputError("a conv layer cannot lose every channel; keep at least one per layer")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    root, graph = _graph(model)
    for layer, positions in todo.items():
        if positions:
            group = graph.get_pruning_group(conv_layers(model)[layer], tp.prune_conv_out_channels, idxs=positions)
            norms = [d.target.module for d, _ in group if isinstance(d.target.module, nn.GroupNorm)]
            per_channel = [n.num_groups == n.num_channels for n in norms]
            group.prune()
            for norm, single in zip(norms, per_channel):
                if single:
                    norm.num_groups = norm.num_channels
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, True))  # torch-pruning's new Parameters always require grad
    record = pruned_conv_of(model)
    for layer, ids in removed.items():
        record[layer] = sorted(set(record.get(layer, ())) | set(ids))
    family = family_of(model)
    widths = original_widths(model)
    setattr(model.config, PRUNED_CONV_KEY, {str(l): ids for l, ids in sorted(record.items()) if ids})
    if family.conv_widths_in_config:
        family.set_conv_widths_(model.config, [w - len(record.get(l, ())) for l, w in enumerate(widths)])
    return model


@dataclass(frozen=True)
class ChannelMacs:
    """The front end's channel-dependent MACs as a function of the kept channels per conv layer, exact:
    conv l costs K_l x c_(l-1) x c_l x T_l, and the consumers outside the stack (feature projection,
    Whisper's conv2) cost their per-channel MACs x c_last. Measured shapes, one forward."""

    counts: tuple[int, ...]  # c_l now
    first_in: int  # input channels of conv 0 (1 for a waveform, the mel bins for Whisper)
    per_pair: tuple[int, ...]  # K_l x T_l: MACs per (input channel, output channel) of conv l
    tail: int  # MACs of the outside consumers per channel of the last conv layer

    def macs(self, counts: list[int] | tuple[int, ...]) -> int:
        inputs = [self.first_in, *counts[:-1]]
        return sum(p * i * c for p, i, c in zip(self.per_pair, inputs, counts)) + self.tail * counts[-1]

    def saved(self, removed: dict[int, int]) -> int:
        """MACs saved by removing `removed[l]` more channels of layer l."""
        after = [c - removed.get(l, 0) for l, c in enumerate(self.counts)]
        return self.macs(self.counts) - self.macs(after)


def channel_macs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> ChannelMacs:
    """The `ChannelMacs` of `model` on `inputs` (the model's example input). Cost: one forward."""
    convs, wiring = conv_layers(model), conv_wiring(model)
    root = family_of(model).conv_root(model)
    tails = [root.get_submodule(n) for n in wiring[-1].consumers]
    seen: dict[nn.Module, torch.Size] = {}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen.setdefault(module, output.shape)

    handles = [m.register_forward_hook(record) for m in [*convs, *tails]]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    per_pair = tuple(c.kernel_size[0] * seen[c][-1] // c.groups for c in convs)  # K x T_out (B = 1)
    tail = 0
    for module in tails:
        shape = seen[module]  # Linear: (1, T, D); Conv1d: (1, C_out, T_out)
        tail += shape[-1] * shape[-2] if isinstance(module, nn.Linear) else module.kernel_size[0] * shape[-1] * shape[-2]
    return ChannelMacs(tuple(c.out_channels for c in convs), convs[0].in_channels, per_pair, tail)


def conv_plan_of(model: nn.Module, plan: object) -> object:
    """`plan` with the channels already removed from `model` as its `pruned_conv`."""
    from dataclasses import replace

    pruned = {l: tuple(ids) for l, ids in pruned_conv_of(model).items() if ids}
    if not pruned:
        return plan
    return replace(plan, pruned_conv=pruned, conv_width=max(original_widths(model)))


def dense_config(config: object) -> object:
    """A copy of `config` with every conv channel back (no record, the original widths)."""
    from ..families import family_for_type

    config = copy.deepcopy(config)
    pruned = getattr(config, PRUNED_CONV_KEY, None) or {}
    if hasattr(config, PRUNED_CONV_KEY):
        delattr(config, PRUNED_CONV_KEY)
    family = family_for_type(config.model_type)
    if pruned and family.conv_widths_in_config:
        widths = family.conv_widths(config)
        family.set_conv_widths_(config, [w + len(pruned.get(str(l), ())) for l, w in enumerate(widths)])
    return config
