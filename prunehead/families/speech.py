"""wav2vec 2.0, HuBERT and data2vec-audio: a conv front end, then `encoder.layers[i].attention`.

Their attention goes through transformers' `AttentionInterface`, so routing needs nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from .base import AttentionSite, Family, make_site
from .runner import LayerRunner


def base_model(model: nn.Module) -> nn.Module:
    """The bare backbone of a task model (itself when it is one)."""
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


class SpeechFamily(Family):
    name = "speech"
    model_types = ("wav2vec2", "hubert", "data2vec-audio")
    ffn_paths = (("feed_forward.intermediate_dense", "feed_forward.output_dense"),)

    def feature_extractor(self, config: Any, rate: int) -> Any:
        import transformers as tf

        return tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0, do_normalize=True,
                                           return_attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer")

    def export_inputs(self, model: nn.Module) -> tuple[str, tuple[str, ...], dict[str, int]]:
        """Raw audio; layer-norm feature encoders (and data2vec-audio) take an attention mask too, as their
        HF feature extractors return one; group-norm models (wav2vec2-base) take audio only."""
        config = model.config
        masked = config.model_type == "data2vec-audio" or getattr(config, "feat_extract_norm", "") == "layer"
        return "speech", ("input_values", "attention_mask") if masked else ("input_values",), {}

    def encoder(self, model: nn.Module) -> nn.Module:
        return base_model(model).encoder

    conv_widths_in_config = True  # conv_dim: a model pruned only in its front end is a plain checkpoint

    def conv_layers(self, model: nn.Module) -> list[nn.Module]:
        return [layer.conv for layer in base_model(model).feature_extractor.conv_layers]

    def conv_root(self, model: nn.Module) -> nn.Module:
        return base_model(model)

    def conv_inputs(self, model: nn.Module) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        return {"input_values": torch.zeros(1, 16000, device=device)}  # 1 s of 16 kHz audio (B, T)

    def conv_widths(self, config: Any) -> list[int]:
        return [int(w) for w in config.conv_dim]

    def set_conv_widths_(self, config: Any, widths: list[int]) -> None:
        config.conv_dim = list(widths)

    def sites(self, model: nn.Module) -> list[AttentionSite]:
        return [make_site(i, layer, "attention", self.projections, layer.attention, "out_proj")
                for i, layer in enumerate(self.layers(model))]

    def runner(self, model: nn.Module) -> LayerRunner | None:
        prefix = getattr(model, "base_model_prefix", "")
        base = getattr(model, prefix, None) if prefix else None
        if base is None or base is model or getattr(model.config, "use_weighted_layer_sum", False):
            return None
        encoder = base.encoder
        final_norm = encoder.layer_norm if type(encoder).__name__.endswith("StableLayerNorm") else None
        adapter = getattr(base, "adapter", None)

        def post(hidden: Any) -> BaseModelOutput:
            if final_norm is not None:
                hidden = final_norm(hidden)
            if adapter is not None:
                hidden = adapter(hidden)
            return BaseModelOutput(last_hidden_state=hidden)

        return LayerRunner(encoder.layers, model, prefix, post)
