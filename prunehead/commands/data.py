"""`prunehead data`: synthesize speech data sets and inspect any data spec."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from .options import Data, OnError, OnErrorChoice, Split, TaskName

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Synthesize speech data sets and inspect data.")


@app.command("synth")
def synth_cmd(task: Annotated[TaskName, typer.Argument(help="Which kind of data set.")],
              out: Annotated[Path, typer.Option("--out", "-o", help="New folder to write.")],
              n_per_class: Annotated[int, typer.Option(help="Training clips per class (ASR: sentences).")] = 60,
              seed: Annotated[int, typer.Option(min=0, help="Same seed, same files.")] = 0,
              test_fraction: Annotated[float, typer.Option(help="Test clips per class, relative.")] = 0.25,
              n_speakers: Annotated[int, typer.Option(help="SID: number of speakers (voices).")] = 8) -> None:
    """Synthesize a KS / SID / IC / ASR data set with espeak-ng and flite voices plus noise."""
    from ..data.synth import synthesize

    synthesize(task.value, out, n_per_class=n_per_class, seed=seed, test_fraction=test_fraction, n_speakers=n_speakers)
    typer.echo(f"wrote {out}")


@app.command("info")
def info_cmd(data: Data, split: Split = "train", on_error: OnError = OnErrorChoice.stop) -> None:
    """Load a data split and print its size, duration and classes."""
    from ..data import DEFAULT_RATE, label_names, load_data

    ds = load_data(data, split, on_error=on_error.value)
    minutes = float(sum(ds["length"])) / DEFAULT_RATE / 60
    typer.echo(f"{len(ds)} utterances, {minutes:.1f} min")
    if "label" in ds.column_names:
        names = label_names(ds)
        counts = Counter(int(i) for i in ds["label"])
        typer.echo(", ".join(f"{names[i]}: {counts[i]}" for i in range(len(names))))
