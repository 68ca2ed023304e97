"""Per-architecture head adapter: where the attention blocks are, and L, H, head_dim.

Supported families route attention through transformers' `AttentionInterface` (see method.md §3.4):
wav2vec2, HuBERT, data2vec-audio, the Whisper encoder, and BERT-family text encoders.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedModelError

SPEECH_TYPES = ("wav2vec2", "hubert", "data2vec-audio")
TEXT_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
SUPPORTED_TYPES = (*SPEECH_TYPES, "whisper", *TEXT_TYPES)

PRUNED_HEADS_KEY = "prunehead_pruned_heads"  # config.json entry: {"<layer>": [original head ids]}


@dataclass
class AttentionSite:
    """One self-attention block of layer `layer`.

    `module` is the module that calls the attention function (receives q/k/v); `q`, `k`, `v` are its
    input projections and `out` the output projection that mixes the heads. `owner.attr` is where
    `module` is attached (so an emptied layer can be swapped for a bias-only block); for BERT the
    output projection lives on `out_owner.out_attr`, for the others on `module` itself.
    """

    layer: int
    module: nn.Module
    q: nn.Linear | None
    k: nn.Linear | None
    v: nn.Linear | None
    out: nn.Module
    owner: nn.Module
    attr: str
    out_owner: nn.Module
    out_attr: str


@dataclass
class HeadAdapter:
    """The head layout of a model: `num_layers` x `num_heads` heads of width `head_dim` (as configured)."""

    model_type: str
    num_layers: int
    num_heads: int
    head_dim: int
    sites: list[AttentionSite]

    def kept_heads(self, model: nn.Module) -> list[list[int]]:
        """Original ids of the heads each layer still has, in their order in the weights."""
        pruned = pruned_heads_of(model)
        return [[h for h in range(self.num_heads) if h not in pruned.get(l, ())] for l in range(self.num_layers)]

    def heads_per_layer(self, model: nn.Module) -> list[int]:
        """How many heads each layer has now."""
        return [len(kept) for kept in self.kept_heads(model)]


def pruned_heads_of(model: nn.Module) -> dict[int, list[int]]:
    """Original ids of the heads already removed from `model`, per layer (from its config)."""
    raw = getattr(getattr(model, "config", None), PRUNED_HEADS_KEY, None) or {}
    return {int(layer): sorted(int(h) for h in heads) for layer, heads in raw.items()}


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", type(model).__name__)


def _speech_encoder(model: nn.Module) -> nn.Module:
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    return base.encoder


def _whisper_encoder(model: nn.Module) -> nn.Module:
    if hasattr(model, "layers") and hasattr(model, "conv1"):  # WhisperEncoder itself
        return model
    if hasattr(model, "encoder"):  # WhisperForAudioClassification, WhisperModel
        return model.encoder
    return model.model.encoder  # WhisperForConditionalGeneration


def _site(layer: int, owner: nn.Module, attr: str, names: tuple[str, str, str], out_owner: nn.Module,
          out_attr: str) -> AttentionSite:
    module = getattr(owner, attr)
    q, k, v = (getattr(module, n, None) for n in names)
    return AttentionSite(layer, module, q, k, v, getattr(out_owner, out_attr), owner, attr, out_owner, out_attr)


def head_adapter(model: nn.Module) -> HeadAdapter:
    """Find the attention blocks of `model` in layer order.

    Raises:
        UnsupportedModelError: the architecture is not one of `SUPPORTED_TYPES`.
    """
    model_type = _model_type(model)
    config = model.config
    if model_type in SPEECH_TYPES:
        layers = _speech_encoder(model).layers
        sites = [_site(i, layer, "attention", ("q_proj", "k_proj", "v_proj"), getattr(layer, "attention"), "out_proj")
                 for i, layer in enumerate(layers)]
        num_heads = config.num_attention_heads
        hidden = config.hidden_size
    elif model_type == "whisper":
        layers = _whisper_encoder(model).layers
        sites = [_site(i, layer, "self_attn", ("q_proj", "k_proj", "v_proj"), getattr(layer, "self_attn"), "out_proj")
                 for i, layer in enumerate(layers)]
        num_heads = config.encoder_attention_heads
        hidden = config.d_model
    elif model_type in TEXT_TYPES:
        base = getattr(model, getattr(model, "base_model_prefix", ""), model)
        sites = [_site(i, layer.attention, "self", ("query", "key", "value"), layer.attention.output, "dense")
                 for i, layer in enumerate(base.encoder.layer)]
        num_heads = config.num_attention_heads
        hidden = config.hidden_size
    else:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported (its attention does not go through transformers' "
            f"attention interface); supported model types: {', '.join(SUPPORTED_TYPES)}")
    return HeadAdapter(model_type, len(sites), num_heads, hidden // num_heads, sites)
