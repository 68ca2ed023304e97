"""Accuracy of exported graphs on a data set, through the same task code that evaluates PyTorch models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..workspace import Workspace, open_workspace
from .latency import ort_session
from .onnx import Signature

_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OrtModel(nn.Module):
    """An ONNX graph behind the `model(**inputs).logits` interface that `prunehead.tasks` evaluates."""

    def __init__(self, path: str | Path, sig: Signature, config: Any):
        super().__init__()
        self.session = ort_session(path, spin=False)
        self.dtypes = {i.name: _NUMPY[i.type] for i in self.session.get_inputs()}
        self.sig = sig
        self.config = config
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # tasks read the device from a parameter

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        feeds = {}
        for name in self.sig.input_names:
            if name in inputs:
                feeds[name] = inputs[name].cpu().numpy().astype(self.dtypes[name])
            elif name == "attention_mask":  # the extractor made none: every sample is full length
                first = inputs[self.sig.input_names[0]]
                feeds[name] = np.ones(tuple(first.shape[:2]), dtype=self.dtypes[name])
            else:
                raise InputError(f"the data batches have no {name!r}; the graph needs {list(self.sig.input_names)}")
        logits = self.session.run(None, feeds)[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))


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
    runs = {"pytorch": model, **{stage: OrtModel(path, sig, model.config) for stage, path in files.items()}}
    return {name: {k: float(v) for k, v in data.evaluate(runner).items()} for name, runner in runs.items()}
