"""Run a model from the hidden state entering encoder layer l (method.md §1.10): the mechanism lives in
`prunehead.families.runner`, the per-family part in each family's `runner`."""

from __future__ import annotations

from torch import nn

from ..families import family_of
from ..families.runner import Captured, LayerRunner, select_rows

__all__ = ["Captured", "LayerRunner", "layer_runner", "select_rows"]


def layer_runner(model: nn.Module) -> LayerRunner | None:
    """The run-from-layer helper for `model`'s family, or None where only full passes are safe."""
    return family_of(model).runner(model)
