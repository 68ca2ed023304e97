"""Modeling code for a model whose attention heads, feed-forward neurons or conv channels were removed by prunehead.

This file travels with the checkpoint (Hugging Face remote code, `auto_map` in config.json) and imports
only torch and transformers. Each class below subclasses the transformers class of the same
architecture and, in `__init__` (before the weights load), removes the heads listed in
`config.prunehead_pruned_heads` ({"<layer>": [original head ids]}): the q/k/v rows and output-projection
columns of a removed head go; a layer without heads returns its output-projection bias at every position,
exactly what gating all its heads to 0 gives. It then removes the feed-forward (FFN) neurons listed in
`config.prunehead_pruned_ffn` ({"<layer>": [original neuron ids]}): the intermediate projection's rows and
the output projection's columns of each; then Whisper's conv1 channels listed in `config.prunehead_pruned_conv`
(wav2vec2-family configs state their pruned conv widths in `conv_dim`). Load it with
`AutoModelFor<Task>.from_pretrained(folder, trust_remote_code=True)`.

config.json says `model_type: "prunehead-<type>"` so that transformers refuses to load the folder
without this code (it would otherwise re-initialise emptied layers at random); the config class below
reads that back as `<type>`, so pipelines and generation treat the model as its architecture.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import transformers  # noqa: F401 - the generated classes at the end subclass transformers' classes
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

PRUNED_HEADS_KEY = "prunehead_pruned_heads"
PRUNED_FFN_KEY = "prunehead_pruned_ffn"
PRUNED_CONV_KEY = "prunehead_pruned_conv"
TYPE_PREFIX = "prunehead-"

_SPEECH = ("encoder.layers", "attention", ("q_proj", "k_proj", "v_proj"), "attention.out_proj")
_TEXT = ("encoder.layer", "attention.self", ("query", "key", "value"), "attention.output.dense")
# model_type -> (layer list from the backbone, attention block from a layer, its q/k/v, output projection
# from a layer) and the config field with the number of heads per layer.
SITES: dict[str, tuple[tuple[str, str, tuple[str, str, str], str], str]] = {
    "wav2vec2": (_SPEECH, "num_attention_heads"),
    "hubert": (_SPEECH, "num_attention_heads"),
    "data2vec-audio": (_SPEECH, "num_attention_heads"),
    "whisper": (("encoder.layers", "self_attn", ("q_proj", "k_proj", "v_proj"), "self_attn.out_proj"),
                "encoder_attention_heads"),
    "bert": (_TEXT, "num_attention_heads"),
    "roberta": (_TEXT, "num_attention_heads"),
    "xlm-roberta": (_TEXT, "num_attention_heads"),
    "camembert": (_TEXT, "num_attention_heads"),
    "electra": (_TEXT, "num_attention_heads"),
}

_SPEECH_FFN = ("feed_forward.intermediate_dense", "feed_forward.output_dense")
_TEXT_FFN = ("intermediate.dense", "output.dense")
# model_type -> (intermediate projection, output projection) of the feed-forward block, from a layer of SITES.
FFN_SITES: dict[str, tuple[str, str]] = {
    "wav2vec2": _SPEECH_FFN,
    "hubert": _SPEECH_FFN,
    "data2vec-audio": _SPEECH_FFN,
    "whisper": ("fc1", "fc2"),
    "bert": _TEXT_FFN,
    "roberta": _TEXT_FFN,
    "xlm-roberta": _TEXT_FFN,
    "camembert": _TEXT_FFN,
    "electra": _TEXT_FFN,
}


class BiasOnly(nn.Module):
    """Stands in for an output projection with no inputs left: returns its bias at every position."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*hidden_states.shape[:-1], self.bias.shape[0])  # (B, L, D)


class EmptyAttention(nn.Module):
    """A speech / Whisper attention block with no heads: out_proj.bias at every frame."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.out_proj = BiasOnly(bias)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return self.out_proj(hidden_states), None


class EmptySelfAttention(nn.Module):
    """A BERT self-attention with no heads: a zero-width context that the bias-only dense maps to its bias."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return hidden_states[..., :0], None  # (B, L, 0)


def _get(module: nn.Module, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    *parents, name = path.split(".")
    setattr(_get(module, ".".join(parents)) if parents else module, name, value)


def _layers(model: nn.Module, model_type: str) -> nn.ModuleList:
    """The encoder layers of a task model or backbone (Whisper seq2seq: `model.model.encoder`)."""
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    if model_type == "whisper" and not hasattr(backbone, "encoder"):
        backbone = model  # WhisperForAudioClassification holds the encoder itself
    return _get(backbone, SITES[model_type][0][0])


def _bias(linear: nn.Module) -> torch.Tensor:
    if getattr(linear, "bias", None) is not None:
        return linear.bias
    return torch.zeros(linear.weight.shape[0], dtype=linear.weight.dtype, device=linear.weight.device)


def _slice_(layer: nn.Module, site: tuple, keep: list[int], head_dim: int) -> None:
    """Keep the heads at positions `keep` of one layer: q/k/v rows and output-projection columns."""
    _, block_path, projections, out_path = site
    block, out = _get(layer, block_path), _get(layer, out_path)
    index = torch.cat([torch.arange(p * head_dim, (p + 1) * head_dim) for p in keep]).to(out.weight.device)
    for name in projections:
        setattr(block, name, prune_linear_layer(getattr(block, name), index, dim=0))
    _set(layer, out_path, prune_linear_layer(out, index, dim=1))
    for attr in ("num_heads", "num_attention_heads"):
        if hasattr(block, attr):
            setattr(block, attr, len(keep))
    if hasattr(block, "all_head_size"):
        block.all_head_size = len(keep) * head_dim


def _empty_(layer: nn.Module, site: tuple) -> None:
    """Replace a layer's attention that has no heads left by one that returns the output bias."""
    _, block_path, _, out_path = site
    bias = _bias(_get(layer, out_path))
    if out_path.startswith(block_path + "."):  # speech / Whisper: the block owns its output projection
        _set(layer, block_path, EmptyAttention(bias))
    else:  # BERT: attention.self and attention.output.dense
        _set(layer, block_path, EmptySelfAttention())
        _set(layer, out_path, BiasOnly(bias))


def placeholder_pattern(model_type: str, layer: int) -> str:
    """Regex of the checkpoint keys an emptied layer stores as 0-size placeholders (q/k/v, output weight).

    The placeholders make the classes of plain transformers fail on a size mismatch instead of silently
    re-initialising the layer; the classes here ignore them.
    """
    (layers, block, projections, out), _ = SITES[model_type]
    names = "|".join(f"{re.escape(block)}\\.{p}\\.(weight|bias)" for p in projections)
    return rf"(^|\.){re.escape(layers)}\.{layer}\.({names}|{re.escape(out)}\.weight)$"


def remove_heads_(model: nn.Module, model_type: str, pruned: dict[str, list[int]]) -> list[str]:
    """Remove the heads `pruned` ({"<layer>": [original ids]}) from a freshly built `model` in place.

    Returns the `placeholder_pattern` of every emptied layer.
    """
    site, heads_key = SITES[model_type]
    num_heads = getattr(model.config, heads_key)
    head_dim = getattr(model.config, "d_model", None) or model.config.hidden_size
    head_dim //= num_heads
    emptied = []
    for index, layer in enumerate(_layers(model, model_type)):
        gone = set(int(h) for h in pruned.get(str(index), ()))
        keep = [h for h in range(num_heads) if h not in gone]
        if keep and gone:
            _slice_(layer, site, keep, head_dim)
        elif not keep:
            _empty_(layer, site)
            emptied.append(placeholder_pattern(model_type, index))
    return emptied


def remove_neurons_(model: nn.Module, model_type: str, pruned: dict[str, list[int]]) -> None:
    """Remove the FFN neurons `pruned` ({"<layer>": [original ids]}) from a freshly built `model` in place.

    Neuron i is row i of the intermediate projection (weight and bias) and column i of the output
    projection. A layer may lose every neuron: its block then adds the output bias alone, like gating them all.
    """
    intermediate_path, output_path = FFN_SITES[model_type]
    for index, layer in enumerate(_layers(model, model_type)):
        gone = set(int(i) for i in pruned.get(str(index), ()))
        if not gone:
            continue
        intermediate, output = _get(layer, intermediate_path), _get(layer, output_path)
        keep = [i for i in range(intermediate.out_features) if i not in gone]
        kept = torch.tensor(keep, dtype=torch.long, device=intermediate.weight.device)  # (I_l,)
        _keep_(intermediate, kept, dim=0)  # weight (I_l, D), bias (I_l,)
        _keep_(output, kept, dim=1)  # weight (D, I_l), bias (D,) unchanged


def _keep_(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep only the rows (dim 0, with their bias) or columns (dim 1) `index` of `linear`, in place.

    In place rather than a new nn.Linear: a layer left with 0 neurons is then not re-initialised
    (torch warns on every zero-element init), and dtype, device and requires_grad stay as they were.
    """
    with torch.no_grad():
        weight = linear.weight.index_select(dim, index)
        linear.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
        if dim == 0 and linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.index_select(0, index), requires_grad=linear.bias.requires_grad)
    if dim == 0:
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)


# model_type -> (convolution whose output channels were removed, the convolution reading them), from the
# encoder. wav2vec2-family configs state their conv widths (conv_dim), so they need nothing here.
CONV_SITES: dict[str, tuple[str, str]] = {"whisper": ("conv1", "conv2")}


def remove_conv_channels_(model: nn.Module, model_type: str, pruned: dict[str, list[int]]) -> None:
    """Remove the conv channels `pruned` ({"0": [original ids]}) of families whose config does not state the
    widths: the producer's rows (and bias), the consumer's input columns."""
    if model_type not in CONV_SITES or not pruned.get("0"):
        return
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    encoder = getattr(backbone, "encoder", None) or model.encoder
    producer, consumer = (getattr(encoder, name) for name in CONV_SITES[model_type])
    gone = set(int(i) for i in pruned["0"])
    keep = torch.tensor([c for c in range(producer.out_channels) if c not in gone], dtype=torch.long,
                        device=producer.weight.device)  # (C_kept,)
    with torch.no_grad():
        producer.weight = nn.Parameter(producer.weight.index_select(0, keep))  # (C_kept, C_in, K)
        if producer.bias is not None:
            producer.bias = nn.Parameter(producer.bias.index_select(0, keep))
        consumer.weight = nn.Parameter(consumer.weight.index_select(1, keep))  # (C_out, C_kept, K)
    producer.out_channels = consumer.in_channels = len(keep)


class PrunedConfigMixin:
    """A config read from and written as `model_type: "prunehead-<type>"`, `<type>` in memory."""

    @classmethod
    def get_config_dict(cls, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        config_dict, kwargs = super().get_config_dict(*args, **kwargs)
        if config_dict.get("model_type") == TYPE_PREFIX + cls.model_type:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["model_type"] = TYPE_PREFIX + type(self).model_type
        return output


class PrunedModelMixin:
    """Removes the config's pruned heads and FFN neurons right after the transformers class builds the full model."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        model_type = type(config).model_type
        emptied = remove_heads_(self, model_type, getattr(config, PRUNED_HEADS_KEY, None) or {})
        remove_neurons_(self, model_type, getattr(config, PRUNED_FFN_KEY, None) or {})
        remove_conv_channels_(self, model_type, getattr(config, PRUNED_CONV_KEY, None) or {})
        self._keys_to_ignore_on_load_unexpected = set(self._keys_to_ignore_on_load_unexpected or ()) | set(emptied)


# Generated classes for this checkpoint follow.
