"""Whole encoder layers as a unit kind (depth pruning): a skip gate, physical removal, exact per-layer MACs.

Layer l maps the residual stream h to layer_l(h). Skipping it (LayerDrop, Fan et al. 2019, "Reducing
Transformer Depth on Demand with Structured Dropout") passes h on unchanged. The gate g interpolates,
h + g (layer_l(h) - h): g = 0 is the skip, exactly what removal computes (h + 0 = h), g = 1 the layer, and
dLoss/dg at 1 is the layer's Taylor importance (`prunehead.scorers.depth`).

Removal deletes the module from the encoder's layer list and sets `config.num_hidden_layers` (Whisper's
attribute map turns it into `encoder_layers`) to L', so a model that lost only layers is a plain
checkpoint. The config records the original ids of the removed layers in `prunehead_pruned_layers`
(cumulative); the per-layer records of removed heads and neurons are renumbered to the layers that stay, so
in memory a layer-pruned model is simply an L'-layer model. `original_layer_ids` maps back (plan.json is
written in the original ids, `prunehead.surgery.history_of`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError, UnsupportedModelError
from ..families import family_of
from ..portable.template import PRUNED_FFN_KEY, PRUNED_HEADS_KEY

PRUNED_LAYERS_KEY = "prunehead_pruned_layers"  # config.json: [original ids of the removed encoder layers]

__all__ = ["PRUNED_LAYERS_KEY", "LayerMacs", "drop_empty_layers_", "encoder_layers", "fixed_layers", "layer_gating",
           "layer_macs", "original_layer_ids", "remove_layers_", "removed_layers_of"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of `model` (asks its family)."""
    return family_of(model).layers(model)


def removed_layers_of(model: nn.Module) -> list[int]:
    """Original ids of the encoder layers already removed from `model` (from its config)."""
    return sorted(int(l) for l in getattr(getattr(model, "config", None), PRUNED_LAYERS_KEY, None) or [])


def original_layer_ids(model: nn.Module) -> list[int]:
    """The original id of each layer `model` has now, in order."""
    gone = set(removed_layers_of(model))
    total = len(encoder_layers(model)) + len(gone)
    return [l for l in range(total) if l not in gone]


def fixed_layers(model: nn.Module) -> frozenset[int]:
    """Layers (current ids) the family cannot remove, e.g. WavLM's first, which computes every layer's
    position bias."""
    return family_of(model).fixed_layers(model)


def check_removable(model: nn.Module, layers: Iterable[int] = ()) -> None:
    """UnsupportedModelError when `model` cannot lose layers; InputError naming a fixed layer in `layers`."""
    if getattr(model.config, "use_weighted_layer_sum", False):
        raise UnsupportedModelError("the classifier mixes every layer's hidden states (use_weighted_layer_sum), so "
                                    "removing a layer changes what it reads; prune heads and neurons instead")
    fixed = sorted(set(layers) & fixed_layers(model))
    if fixed:
        raise InputError(f"layer(s) {fixed} of this {model.config.model_type} model cannot be removed (the first "
                         "computes the position bias every layer reads); score layers with prunehead, which ranks "
                         "them last")


@contextlib.contextmanager
def layer_gating(model: nn.Module, gate: torch.Tensor) -> Iterator[None]:
    """Inside the block layer l outputs h + g_l (layer_l(h) - h): `gate` is (L, 1) or per sample (B, L, 1);
    g_l = 0 skips the layer exactly. Forward hooks on the layers, removed on exit; gradients flow to `gate`."""
    layers = encoder_layers(model)
    L = len(layers)
    if tuple(gate.shape[-2:]) != (L, 1) or gate.dim() not in (2, 3):
        raise InputError(f"the layer gate must be (L, 1) = ({L}, 1) or (B, {L}, 1), got {tuple(gate.shape)}")
    known = None if gate.requires_grad or gate.is_meta else gate.detach().cpu()  # constant values: shortcuts
    handles = []
    try:
        for l, layer in enumerate(layers):
            if known is not None and bool((known[..., l, 0] == 1).all()):
                continue  # an open gate changes nothing
            shut = known is not None and bool((known[..., l, 0] == 0).all())  # the skip: h itself
            handles.append(layer.register_forward_hook(_mix(gate[..., l, 0], shut), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _mix(g: torch.Tensor, shut: bool):
    """A forward hook returning h + g (out - h), h the layer's input hidden states (B, T, D); h itself when
    the gate is `shut`."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        h = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        if shut:
            mixed = h
        else:
            gate = g.to(out.device, out.dtype)
            if gate.dim() == 1:
                gate = gate.reshape(-1, *([1] * (out.dim() - 1)))  # (B, 1, 1)
            mixed = h + gate * (out - h)
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    return hook


def remove_layers_(model: nn.Module, layers: Iterable[int]) -> nn.Module:
    """Remove the encoder layers `layers` (current ids) from `model` in place; renumber the per-layer records
    of heads and neurons, record the original ids, set num_hidden_layers. Cost: no forward pass."""
    layer_list = encoder_layers(model)
    gone = sorted(set(int(l) for l in layers))
    if not gone:
        return model
    if gone[-1] >= len(layer_list):
        raise InputError(f"layer {gone[-1]} is beyond the model's {len(layer_list)} layers; make the plan for it")
    check_removable(model, gone)
    original = original_layer_ids(model)
    keep = [l for l in range(len(layer_list)) if l not in gone]
    new_id = {old: new for new, old in enumerate(keep)}
    for l in reversed(gone):
        del layer_list[l]
    config = model.config
    config.num_hidden_layers = len(keep)  # Whisper: encoder_layers (attribute map)
    for key in (PRUNED_HEADS_KEY, PRUNED_FFN_KEY):
        record = getattr(config, key, None)
        if record:
            setattr(config, key, {str(new_id[int(l)]): ids for l, ids in record.items() if int(l) in new_id})
    setattr(config, PRUNED_LAYERS_KEY, sorted(set(removed_layers_of(model)) | {original[l] for l in gone}))
    return model


def drop_empty_layers_(model: nn.Module, inputs: dict[str, torch.Tensor] | None = None) -> list[int]:
    """Remove every layer left with no heads and no FFN neurons whose skip is exact: the model's output on
    `inputs` (default: the family's example) is bit-identical with the layer skipped (pre-LN layers without
    output biases; a post-LN layer still normalizes). Returns the removed layers' current ids.
    Cost: one forward, plus one per candidate layer."""
    from ..heads import head_adapter
    from .ffn import kept_neurons

    if getattr(model.config, "use_weighted_layer_sum", False):
        return []
    heads, neurons, fixed = head_adapter(model).kept_heads(model), kept_neurons(model), fixed_layers(model)
    empty = [l for l, (h, n) in enumerate(zip(heads, neurons)) if not h and not n and l not in fixed]
    if not empty:
        return []
    device = next(model.parameters()).device
    inputs = inputs or family_of(model).example_inputs(model, device=device)
    with torch.no_grad():
        full = _output(model(**inputs))
        exact = []
        for l in empty:
            gate = torch.ones(len(encoder_layers(model)), 1, device=device)
            gate[l] = 0.0
            with layer_gating(model, gate):
                if torch.equal(_output(model(**inputs)), full):
                    exact.append(l)
    remove_layers_(model, exact)
    return exact


def _output(out: Any) -> torch.Tensor:
    """The first tensor of a model's output (logits, or the last hidden state)."""
    if isinstance(out, torch.Tensor):
        return out
    return out[0] if isinstance(out, tuple) else next(v for v in out.values() if isinstance(v, torch.Tensor))


@dataclass(frozen=True)
class LayerMacs:
    """The MACs each encoder layer runs now (`costs[l]`), measured: removing layer l saves exactly that, less
    what its heads and neurons removed in the same plan saved already (`covers`: those kinds' tags)."""

    costs: tuple[int, ...]
    covers: tuple[str, ...] = ("head", "ffn")

    def saved(self, removed: dict[int, int]) -> int:
        """MACs saved by removing the layers in `removed` ({layer: 1}), their other units untouched."""
        return sum(self.costs[l] for l, n in removed.items() if n)


def layer_macs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> LayerMacs:
    """`LayerMacs` of `model` on `inputs` (FlopCounterMode, as `prunehead.cost.count_macs`). Cost: one forward."""
    from ..cost import count_macs_within

    return LayerMacs(tuple(count_macs_within(model, inputs, list(encoder_layers(model)))))
