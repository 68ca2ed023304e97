"""An exported folder as a model: its ONNX graph behind `model(**inputs).logits`, for `prunehead eval`.

`prunehead eval --model EXPORT_DIR` evaluates the graph `export onnx` wrote (the final stage: int8 when
quantized, else optimized, else model.onnx) with the folder's own config and feature extractor, so the
metric it prints is the deployed graph's, measured by the same task code that evaluates PyTorch models.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn

from ..errors import InputError
from .latency import ort_session

_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
SUMMARY_NAME = "export.json"


class OrtModel(nn.Module):
    """An ONNX graph behind the `model(**inputs).logits` interface that `prunehead.tasks` evaluates.

    Cost: one ONNX Runtime run per batch (CPU provider); no gradients, so it can be evaluated, not scored.
    """

    def __init__(self, path: str | Path, config: Any):
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(path, spin=False)
        self.dtypes = {i.name: _NUMPY[i.type] for i in self.session.get_inputs()}
        self.input_names = tuple(self.dtypes)
        self.config = config
        self.main_input_name = self.input_names[0]
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # tasks read the device from a parameter

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        feeds = {}
        for name in self.input_names:
            if name in inputs:
                feeds[name] = inputs[name].cpu().numpy().astype(self.dtypes[name])
            elif name == "attention_mask":  # the extractor made none: every sample is full length
                first = inputs[self.input_names[0]]
                feeds[name] = np.ones(tuple(first.shape[:2]), dtype=self.dtypes[name])
            else:
                raise InputError(f"the data batches have no {name!r}; the graph needs {list(self.input_names)}")
        logits = self.session.run(None, feeds)[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))


def onnx_graph(spec: str | Path) -> Path | None:
    """The graph a model spec names: a `.onnx` file, or an export folder's final graph; None otherwise."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".onnx":
        return path
    if not path.is_dir() or not any(path.glob("*.onnx")):
        return None
    summary = path / SUMMARY_NAME
    name = json.loads(summary.read_text()).get("onnx", "model.onnx") if summary.is_file() else "model.onnx"
    graph = path / str(name)
    if not graph.is_file():
        raise InputError(f"{path}: the export's graph {name} is missing; export the model again")
    return graph


def load_onnx(graph: Path) -> OrtModel:
    """The graph with the config.json of its folder (plain transformers form, as `export onnx` writes it)."""
    folder = graph.parent
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} has no config.json beside {graph.name}; evaluate an `export onnx` folder")
    config = transformers.AutoConfig.from_pretrained(folder)
    return OrtModel(graph, config).eval()
