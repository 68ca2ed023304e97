"""Whisper: only the encoder's self-attention (`encoder.layers[i].self_attn`) is scored and pruned.

Works for WhisperForAudioClassification, WhisperModel, WhisperForConditionalGeneration and a bare
WhisperEncoder. The encoder takes a fixed window of `2 * max_source_positions` mel frames.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from ..errors import InputError, UnsupportedModelError
from .base import AttentionSite, Family, make_site
from .runner import LayerRunner


class WhisperFamily(Family):
    name = "whisper"
    model_types = ("whisper",)
    ffn_paths = (("fc1", "fc2"),)

    def num_heads(self, config: Any) -> int:
        return config.encoder_attention_heads

    def hidden_size(self, config: Any) -> int:
        return config.d_model

    def intermediate_size(self, config: Any) -> int:
        return config.encoder_ffn_dim

    def feature_extractor(self, config: Any, rate: int) -> Any:
        import transformers as tf

        return tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=rate,
                                          chunk_length=config.max_source_positions // 50)

    def export_inputs(self, model: nn.Module) -> tuple[str, tuple[str, ...], dict[str, int]]:
        """Log-mel features of the (cropped) fixed window; the decoder is not exported."""
        if hasattr(model, "decoder") or hasattr(getattr(model, "model", None), "decoder"):
            raise UnsupportedModelError(f"{type(model).__name__} has a decoder, which export does not cover; "
                                        "export an encoder classifier (WhisperForAudioClassification)")
        config = model.config
        return "whisper", ("input_features",), {"fixed_length": 2 * config.max_source_positions,
                                                "num_mel_bins": config.num_mel_bins}

    def encoder(self, model: nn.Module) -> nn.Module:
        if hasattr(model, "layers") and hasattr(model, "conv1"):  # WhisperEncoder itself
            return model
        encoder = getattr(model, "encoder", None) or getattr(getattr(model, "model", None), "encoder", None)
        if encoder is None or not hasattr(encoder, "embed_positions"):
            raise InputError(f"{type(model).__name__} has no Whisper encoder")
        return encoder

    def conv_layers(self, model: nn.Module) -> list[nn.Module]:
        return [self.encoder(model).conv1]  # its channels feed conv2; conv2's own are the model width

    def conv_root(self, model: nn.Module) -> nn.Module:
        return self.encoder(model)

    def conv_inputs(self, model: nn.Module) -> dict[str, torch.Tensor]:
        config, device = model.config, next(model.parameters()).device
        return {"input_features": torch.zeros(1, config.num_mel_bins, 2 * config.max_source_positions, device=device)}

    def conv_widths(self, config: Any) -> list[int]:
        return [int(config.d_model)]

    def audio_classifier(self) -> type:
        from transformers import WhisperForAudioClassification

        return WhisperForAudioClassification

    def freeze_front_end_(self, model: nn.Module) -> None:
        encoder = self.encoder(model)
        for module in (encoder.conv1, encoder.conv2):
            module.requires_grad_(False)

    def sites(self, model: nn.Module) -> list[AttentionSite]:
        return [make_site(i, layer, "self_attn", self.projections, layer.self_attn, "out_proj")
                for i, layer in enumerate(self.layers(model))]

    def runner(self, model: nn.Module) -> LayerRunner | None:
        if getattr(model.config, "use_weighted_layer_sum", False):
            return None
        if hasattr(model, "encoder") and hasattr(model.encoder, "conv1"):  # WhisperForAudioClassification
            owner = model
        elif hasattr(model, "model") and hasattr(getattr(model.model, "encoder", None), "conv1"):
            owner = model.model  # WhisperForConditionalGeneration -> WhisperModel
        else:
            return None
        encoder = owner.encoder
        return LayerRunner(encoder.layers, owner, "encoder",
                           lambda hidden: BaseModelOutput(last_hidden_state=encoder.layer_norm(hidden)))

    def example_inputs(self, model: nn.Module, seconds: float = 1.0, batch: int = 1,
                       device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Whisper's fixed window of mel frames (whatever `seconds`), plus one decoder step for seq2seq."""
        config = model.config
        frames = 2 * config.max_source_positions
        inputs = {"input_features": torch.zeros(batch, config.num_mel_bins, frames, device=device)}
        if hasattr(model, "get_decoder"):  # encoder-decoder: one decoder step
            inputs["decoder_input_ids"] = torch.full((batch, 1), config.decoder_start_token_id, device=device)
        return inputs
