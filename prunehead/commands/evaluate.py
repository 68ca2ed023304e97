"""`prunehead eval`: a model's metrics on a data split, printed and optionally written as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import (BatchSize, ClipSeconds, Data, Device, Dtype, DtypeName, Model, OnError, OnErrorChoice, Overwrite,
                      Split, Task, TaskName, Workers, inputs_of)

__all__ = ["TaskName", "eval_cmd"]


def eval_cmd(model: Model, data: Data, split: Split = "test", batch_size: BatchSize = 16,
             out: Annotated[Path | None, typer.Option("--out", "-o", show_default=False,
                                                      help="Write the metrics to this JSON file.")] = None,
             task: Task = None, device: Device = None, on_error: OnError = OnErrorChoice.stop,
             clip_seconds: ClipSeconds = None, dtype: Dtype = DtypeName.float32, workers: Workers = 0,
             overwrite: Overwrite = False) -> None:
    """Evaluate a model (pruned or not) on a data split: accuracy, or WER and 1 - WER for ASR."""
    import json

    from ..api import evaluate
    from ..specs import Data
    from ..output_guard import atomic_file, check_output

    inputs = inputs_of(model, data) if out is not None else []
    if out is not None:
        out = out.expanduser()
        check_output(out, overwrite, inputs=inputs)
    spec = Data(data, split=split, task=task and task.value, batch_size=batch_size, clip_seconds=clip_seconds,
                on_error=on_error.value, workers=workers)
    metrics = evaluate(model, spec, device=device, dtype=dtype.value, progress=True)
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if out is not None:
        with atomic_file(out, overwrite, inputs=inputs) as tmp:
            tmp.write_text(json.dumps({"model": model, "data": data, "split": split, **metrics}, indent=2) + "\n")
        typer.echo(f"wrote {out}")
