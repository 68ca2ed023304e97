"""The one loader: a model, its processor, its task and one data split, loaded once.

Every library function and command that needs a model with data goes through `open_workspace`, so the
same options give the same model, clip length, labels and samples everywhere (score, prune --scorer,
sweep, eval). `Workspace.draw` is the seeded sample draw of the scorers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

from . import surgery
from .checks import check_model
from .data import align_labels, default_feature_extractor, load_data, make_batches, model_label_names
from .data.loading import check_seed
from .errors import DataError, UnsupportedModelError
from .families import family_of
from .portable.trust import check_custom_code, load_trusted_processor
from .scorers.base import model_device, padding_changes_outputs
from .tasks import Task, get_task, infer_task
from .training.models import load_processor, pick_device

Batch = dict[str, torch.Tensor]
ModelLike = str | Path | nn.Module


@dataclass
class Draw:
    """A seeded draw of samples from a workspace's split, batched for scoring."""

    batches: list[Batch]
    paths: list[str]  # the drawn files, in batch order


@dataclass
class Workspace:
    """`model` (on its device; evaluation and scoring run it in eval mode and give its mode back), its `task`,
    `(feature_extractor, tokenizer)` and a split."""

    model: nn.Module
    task: Task
    processor: tuple[Any, Any]
    dataset: datasets.Dataset
    batch_size: int = 16
    source: str | None = None  # where the model was loaded from (processor files), if a path or hub id
    split: str = "test"
    dtype: str = "float32"  # evaluation precision: float32, bfloat16 or float16 autocast (prunehead.precision)
    workers: int = 0  # DataLoader processes extracting features (0: this process)
    _batches: list[Batch] | None = field(default=None, repr=False)

    def batches(self) -> list[Batch]:
        """The split as padded batches, built once and reused (sweeps evaluate many times)."""
        if self._batches is None:
            self._batches = list(make_batches(self.dataset, self.processor, self.batch_size, **self._loading()))
        return self._batches

    def evaluate(self, model: nn.Module | None = None, progress: bool = False) -> dict[str, float]:
        """Task metrics of `model` (default: the workspace's) on the split. Cost: one forward per sample."""
        return self.task.evaluate(model if model is not None else self.model, self.batches(), progress=progress,
                                  dtype=self.dtype)

    def _loading(self) -> dict[str, Any]:
        """Feature extraction in `workers` processes; pinned batches when the model is on a GPU."""
        return {"workers": self.workers, "pin_memory": model_device(self.model).type == "cuda"}

    def draw(self, samples: int, seed: int = 0, batch_size: int = 8) -> Draw:
        """The first `samples` of a seeded permutation of the split, as scoring batches (model inputs plus
        labels). Padding-sensitive models get equal-length batches (method.md §1.9)."""
        order = np.random.default_rng(check_seed(seed)).permutation(len(self.dataset)).tolist()
        rows = sorted(order[:samples])
        part = self.dataset.select(rows)
        equal = padding_changes_outputs(self.model)
        batches = [{**self.task.model_inputs(b), "labels": b["labels"]}
                   for b in make_batches(part, self.processor, batch_size, equal_length=equal, **self._loading())]
        return Draw(batches, [str(p) for p in part["path"]])


def open_workspace(model: ModelLike, data: str, split: str = "test", *, task: str | None = None,
                   device: str | torch.device | None = None, batch_size: int = 16,
                   clip_seconds: float | None = None, on_error: str = "stop",
                   source: str | Path | None = None, workers: int = 0) -> Workspace:
    """Load a model (path, hub id or loaded module) and `split` of a data set, labels matched by name.

    Args:
        task: ks, sid, ic or asr (default: inferred from the model's head).
        clip_seconds: crop / pad labelled clips (default: the length the model was fine-tuned with).
        source: where to read the feature extractor / tokenizer when `model` is a module.
        workers: DataLoader worker processes for feature extraction (0: this process).
    """
    if not isinstance(data, str):
        raise DataError(f"data must be a data spec (a folder, manifest or data set name), not {type(data).__name__}")
    spec = str(model) if isinstance(model, (str, Path)) else None
    net = surgery.load(spec) if spec is not None else check_model(model)
    check_model(net, finite=True)  # a NaN weight would evaluate to chance with loss nan
    if spec is not None or device is not None:  # a caller's model keeps its device and train / eval mode
        net = net.to(pick_device(device))
    where = spec or (str(source) if source is not None else None)
    trusted = check_custom_code(where) if where is not None else False  # nothing runs without an opt-in
    fe, tok = (load_trusted_processor(where) if trusted else load_processor(where)) if where else (None, None)
    fe = fe or default_feature_extractor(net.config)
    name = task or infer_task(net)
    dataset = load_data(data, split, fe, name, on_error, clip_seconds, min_samples=_min_samples(net))
    if name != "asr":
        dataset = align_labels(dataset, model_label_names(net.config))
    return Workspace(net, get_task(name, net, tok), (fe, tok), dataset=dataset, batch_size=batch_size, source=where,
                     split=split, workers=workers)


def _min_samples(model: nn.Module) -> int:
    """The shortest clip `model`'s front end turns into a frame (0 where it has no such limit)."""
    try:
        return family_of(model).min_input_samples(model.config)
    except (UnsupportedModelError, AttributeError, TypeError):
        return 0
