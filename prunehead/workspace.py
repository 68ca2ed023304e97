"""A model, its task and one data split, loaded once for commands that evaluate or score repeatedly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from torch import nn

from . import surgery
from .data import align_labels, default_feature_extractor, load_data, make_batches
from .tasks import Task, get_task, infer_task
from .train import load_processor, pick_device

Batch = dict[str, torch.Tensor]


@dataclass
class Workspace:
    """`model` (eval mode, on its device), its `task`, `(feature_extractor, tokenizer)` and a split."""

    model: nn.Module
    task: Task
    processor: tuple[Any, Any]
    dataset: datasets.Dataset
    batch_size: int = 16
    _batches: list[Batch] | None = field(default=None, repr=False)

    def batches(self) -> list[Batch]:
        """The split as padded batches, built once and reused (sweeps evaluate many times)."""
        if self._batches is None:
            self._batches = list(make_batches(self.dataset, self.processor, self.batch_size))
        return self._batches

    def evaluate(self, model: nn.Module | None = None, progress: bool = False) -> dict[str, float]:
        """Task metrics of `model` (default: the workspace's) on the split."""
        return self.task.evaluate(model if model is not None else self.model, self.batches(), progress=progress)


def open_workspace(model_spec: str | nn.Module, data_spec: str, split: str = "test", *, task: str | None = None,
                   device: str | None = None, batch_size: int = 16, clip_seconds: float | None = None,
                   on_error: str = "stop", source: str | None = None) -> Workspace:
    """Load a model (spec or loaded module) and `split` of a data set, with labels matched by name.

    Args:
        source: where to read the feature extractor / tokenizer when `model_spec` is a module.
    """
    model = surgery.load(model_spec) if isinstance(model_spec, str) else model_spec
    model = model.to(pick_device(device)).eval()
    fe, tok = load_processor(source or model_spec) if isinstance(source or model_spec, str) else (None, None)
    fe = fe or default_feature_extractor(model.config)
    name = task or infer_task(model)
    data = load_data(data_spec, split, fe, name, on_error, clip_seconds)
    if name != "asr":
        data = align_labels(data, list(model.config.id2label.values()))
    return Workspace(model, get_task(name, model, tok), (fe, tok), data, batch_size)
