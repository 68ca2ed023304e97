"""`prunehead eval`: a model's metrics on a data split, printed and optionally written as JSON."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..outputs import atomic_file, check_output
from ..train import evaluate_model
from .options import Device, Model



class TaskName(str, Enum):
    """The tasks (prunehead.tasks.TASKS)."""

    ks = "ks"
    sid = "sid"
    ic = "ic"
    asr = "asr"


class OnErrorChoice(str, Enum):
    """What to do with a file that cannot be decoded."""

    stop = "stop"
    skip = "skip"


Data = Annotated[str, typer.Option("--data", "-d", help="Folder, .csv/.jsonl manifest, fsdd-ks[:DIR], fsdd-sid[:DIR], "
                                                        "speech-commands[:DIR] or hub:NAME[:CONFIG]; join with '+'.")]
Split = Annotated[str, typer.Option(help="Data split to use.")]
BatchSize = Annotated[int, typer.Option(help="Utterances per batch.")]
Task = Annotated[TaskName | None, typer.Option(help="Task (default: inferred from the model / data).")]
OnError = Annotated[OnErrorChoice, typer.Option(help="stop: fail on an undecodable file; skip: drop it with a warning.")]
ClipSeconds = Annotated[float | None, typer.Option(help="Centre-crop / zero-pad every clip to this length.")]


def eval_cmd(model: Model, data: Data, split: Split = "test", batch_size: BatchSize = 16,
             out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics to this JSON file.")] = None,
             task: Task = None, device: Device = None, on_error: OnError = OnErrorChoice.stop,
             clip_seconds: ClipSeconds = None,
             overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False) -> None:
    """Evaluate a model (pruned or not) on a data split: accuracy, or WER and 1 - WER for ASR."""
    if out is not None:
        check_output(out, overwrite)
    metrics = evaluate_model(model, data, split, batch_size, task and task.value, device, on_error.value,
                             clip_seconds)
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if out is not None:
        with atomic_file(out, overwrite) as tmp:
            tmp.write_text(json.dumps({"model": model, "data": data, "split": split, **metrics}, indent=2) + "\n")
        typer.echo(f"wrote {out}")
