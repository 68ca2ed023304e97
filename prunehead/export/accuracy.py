"""Accuracy of exported graphs on a data set, through the same task code that evaluates PyTorch models."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import InputError
from ..workspace import Workspace, open_workspace
from .onnx import Signature
from .runtime import OrtModel


def load_eval_data(model: nn.Module, sig: Signature, data: str, split: str = "test",
                   source: str | None = None) -> Workspace:
    """`split` of data spec `data` for `model`, through the one loader (labels matched by name)."""
    if sig.kind == "text":
        raise InputError("--data re-checks speech models only; leave it out for text models")
    return open_workspace(model, data, split, batch_size=8, source=source)


def data_metrics(model: nn.Module, files: dict[str, Path], sig: Signature,
                 data: Workspace) -> dict[str, dict[str, float]]:
    """Task metrics of the PyTorch model and of each graph in `files` (stage -> .onnx).

    Cost: one PyTorch and one ONNX Runtime forward per sample and graph.
    """
    runs = {"pytorch": model, **{stage: OrtModel(path, model.config) for stage, path in files.items()}}
    return {name: {k: float(v) for k, v in data.evaluate(runner).items()} for name, runner in runs.items()}
