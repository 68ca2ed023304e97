"""The head layout of a model: L x H heads of width head_dim, found by the model's family.

`head_adapter(model)` asks `prunehead.families.family_of(model)` where the attention blocks are; the
removed heads of a pruned model are read from its config (`prunehead_pruned_heads`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .families import SUPPORTED_TYPES, AttentionSite, Family, family_of
from .families.speech import SpeechFamily
from .families.text import TextFamily

SPEECH_TYPES = SpeechFamily.model_types
TEXT_TYPES = TextFamily.model_types

from .portable.template import PRUNED_HEADS_KEY  # noqa: E402 - config.json: {"<layer>": [original head ids]}

__all__ = ["PRUNED_HEADS_KEY", "SPEECH_TYPES", "SUPPORTED_TYPES", "TEXT_TYPES", "AttentionSite", "HeadAdapter",
           "head_adapter", "pruned_heads_of"]


@dataclass
class HeadAdapter:
    """The head layout of a model: `num_layers` x `num_heads` heads of width `head_dim` (as configured)."""

    model_type: str
    num_layers: int
    num_heads: int
    head_dim: int
    sites: list[AttentionSite]
    family: Family

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


def head_adapter(model: nn.Module) -> HeadAdapter:
    """Find the attention blocks of `model` in layer order.

    Raises:
        UnsupportedModelError: no family in `prunehead.families` knows the architecture.
    """
    family = family_of(model)
    config = model.config
    sites = family.sites(model)
    num_heads = family.num_heads(config)
    return HeadAdapter(config.model_type, len(sites), num_heads, family.hidden_size(config) // num_heads, sites,
                       family)
