"""One adapter per model family: all of prunehead's architecture knowledge lives here.

`family_of(model)` picks the family by `config.model_type`; the rest of prunehead asks the family
(through `prunehead.heads.head_adapter`) instead of branching on model types.
"""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from .base import AttentionSite, Family
from .speech import SpeechFamily
from .text import TextFamily
from .wavlm import WavLMFamily
from .whisper import WhisperFamily

FAMILIES: tuple[Family, ...] = (SpeechFamily(), WavLMFamily(), WhisperFamily(), TextFamily())
SUPPORTED_TYPES: tuple[str, ...] = tuple(t for family in FAMILIES for t in family.model_types)

__all__ = ["FAMILIES", "SUPPORTED_TYPES", "AttentionSite", "Family", "family_for_type", "family_of"]


def family_of(model: nn.Module) -> Family:
    """The family of `model`.

    Raises:
        UnsupportedModelError: no family knows `model.config.model_type`.
    """
    return family_for_type(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def family_for_type(model_type: str) -> Family:
    """The family of a `config.model_type` (UnsupportedModelError when none knows it)."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UnsupportedModelError(f"model type {model_type!r} is not supported; supported model types: "
                                f"{', '.join(SUPPORTED_TYPES)}")
