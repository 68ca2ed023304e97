"""`finetune` and `export_onnx`: the functions whose result is a folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .. import surgery
from ..specs import Data
from ..training.config import TrainConfig
from ..workspace import ModelLike



# ------------------------------------------------------------------------------------------------ finetune

def finetune(model: ModelLike, data: str, out: str | Path, config: TrainConfig | None = None, *,
             task: str | None = None, resume: bool = False, device: str | None = None, on_error: str = "stop",
             eval_data: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Train `model` (path, hub id, `arch:NAME` or a loaded model) on `data`; the model, its processor
    and train.json go to `out`. A pruned model keeps its plan. Returns the train.json record.

    Cost: `config.epochs` passes (forward + backward) over the training split.
    """
    from ..training.finetune import finetune as train

    cfg = config or TrainConfig()
    if isinstance(model, nn.Module):
        with tempfile.TemporaryDirectory(prefix="prunehead-finetune-") as tmp:
            surgery.save_pretrained(model, tmp)
            return train(tmp, data, out, cfg, task=task, resume=resume, device=device, on_error=on_error,
                         progress=progress, eval_data=eval_data)
    return train(str(model), data, out, cfg, task=task, resume=resume, device=device, on_error=on_error,
                 progress=progress, eval_data=eval_data)




# -------------------------------------------------------------------------------------------------- export

def export_onnx(model: ModelLike, out: str | Path, options: Any = None, *, data: Data | str | None = None,
                baseline: ModelLike | None = None, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Export `model` to the ONNX folder `out` (model.onnx [+ optimized / int8], config.json, the
    preprocessing files, export.json), checked against PyTorch and timed beside the unpruned model.

    Args:
        options: a `prunehead.export.ExportOptions` (opset, optimize, quantize, check, atol, repeats, ...).
        data: also report the metric of PyTorch and of every graph on `data.split` (default test).
        baseline: the unpruned model to time against (default: rebuilt from the model's config).

    Returns the export summary (export.json). Cost: two exports, a few checking forwards, and
    (3 + repeats) ONNX Runtime runs per model, batch size and length.
    """
    from ..export.pipeline import ExportOptions, export_model

    options = options or ExportOptions()
    options.validate()
    spec = str(model) if isinstance(model, (str, Path)) else None
    loaded = surgery.load(spec) if spec is not None else model
    base_spec = str(baseline) if isinstance(baseline, (str, Path)) else None
    reference = surgery.load(base_spec) if base_spec is not None else baseline
    data = Data.of(data)
    return export_model(loaded, out, options, baseline=reference, data=data.spec if data else None,
                        split=(data.split or "test") if data else "test", source=spec, baseline_source=base_spec,
                        overwrite=overwrite, progress=progress)
