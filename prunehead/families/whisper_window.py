"""Crop Whisper's 30 s input window to the clip length, so short clips cost a short encoder pass.

Whisper's encoder sees `max_source_positions` = 1500 frames (30 s at 50 frames/s after the stride-2 conv)
and refuses any other input length. `crop_window_(model, 2.0)` keeps the first 100 rows of the position
table and sets `max_source_positions = 100`; `window_feature_extractor(fe, 2.0)` pads/truncates audio to
2 s (200 mel frames). Both are saved with the model (config.json / preprocessor_config.json), so a plain
`from_pretrained` reload works.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import WhisperFeatureExtractor

from ..errors import InputError
from .whisper import WhisperFamily

FRAMES_PER_SECOND = 50  # encoder positions per second of audio (10 ms hop, conv stride 2)


def whisper_encoder(model: nn.Module) -> nn.Module:
    """The encoder of a Whisper model (ForAudioClassification, ForConditionalGeneration, WhisperModel)."""
    if getattr(getattr(model, "config", None), "model_type", None) != "whisper":
        raise InputError(f"{type(model).__name__} is not a Whisper model; the window crop applies to Whisper only")
    return WhisperFamily().encoder(model)


def window_positions(window_s: float) -> int:
    """Encoder positions of a window of `window_s` whole seconds (2 s -> 100).

    Whole seconds because the feature extractor's `chunk_length` (saved with the model) is an integer.
    """
    if window_s < 1 or not float(window_s).is_integer():
        raise InputError(f"window of {window_s} s is not a whole number of seconds; use e.g. 1, 2 or 3")
    return int(window_s) * FRAMES_PER_SECOND


def crop_window_(model: nn.Module, window_s: float) -> nn.Module:
    """Slice the encoder position table to `window_s` seconds, in place; returns `model`."""
    encoder = whisper_encoder(model)
    positions = window_positions(window_s)
    table = encoder.embed_positions.weight  # (P, D)
    if positions > table.shape[0]:
        raise InputError(f"window of {window_s} s needs {positions} positions but the model has {table.shape[0]}")
    cropped = nn.Embedding(positions, table.shape[1], dtype=table.dtype, device=table.device)
    with torch.no_grad():
        cropped.weight.copy_(table[:positions])  # (P', D)
    cropped.requires_grad_(False)
    encoder.embed_positions = cropped
    encoder.max_source_positions = positions
    for config in {id(c): c for c in (model.config, encoder.config)}.values():
        config.max_source_positions = positions
    return model


def window_feature_extractor(fe: Any, window_s: float) -> WhisperFeatureExtractor:
    """A copy of a Whisper feature extractor that pads/truncates audio to `window_s` seconds."""
    window_positions(window_s)  # validates
    if not isinstance(fe, WhisperFeatureExtractor):
        raise InputError("the window crop needs a WhisperFeatureExtractor")
    kwargs = fe.to_dict()
    for key in ("feature_extractor_type", "processor_class", "n_samples", "nb_max_frames", "mel_filters"):
        kwargs.pop(key, None)
    kwargs["chunk_length"] = int(window_s)
    return WhisperFeatureExtractor(**kwargs)
