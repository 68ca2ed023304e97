"""`prunehead demo`: the whole pipeline offline in a few minutes on a laptop CPU.

synthesize keywords (or use --data) -> train a small Whisper-style encoder from scratch -> score with HIB -> prune 40 % globally
(re-evaluated) -> export a verified ONNX model. Each step is the CLI command of the same name, called
with the arguments printed beside it, so the demo shows exactly what a user would type.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from .options import Overwrite

MARKER = ".prunehead-demo"  # written first into the demo's folder: a later demo may replace that folder
ARTEFACTS = {"data", "model", "scores.json", "scores.png", "pruned", "onnx", MARKER}


def _step(title: str, argv: list[str]) -> float:
    typer.secho(f"\n== {title}\n$ prunehead {shlex.join(argv)}", bold=True)
    return time.time()


def written_by_demo(out: Path) -> bool:
    """True if `out` holds only what an earlier demo wrote (its marker, its artefacts, hidden temporaries)."""
    return (out / MARKER).is_file() and all(p.name in ARTEFACTS or p.name.startswith(".") for p in out.iterdir())


def fresh_output(out: Path, overwrite: bool = False) -> None:
    """Make `out` an empty folder marked as the demo's: an earlier demo's folder is replaced (a fresh run
    each time); any other existing path only with `overwrite`, and never the working folder or one above it."""
    from ..errors import InputError
    from ..output_guard import check_output

    if out.exists():
        if out.is_dir() and Path.cwd().resolve().is_relative_to(out.resolve()):
            raise InputError(f"{out} holds the working folder; choose a new --out for the demo")
        if not (overwrite or (out.is_dir() and written_by_demo(out))):
            raise InputError(f"{out} exists and was not written by `prunehead demo`; choose another --out "
                             "or pass --overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    check_output(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by `prunehead demo`, which replaces this folder when run again\n")


def demo(out: Annotated[Path, typer.Option("--out", "-o", help="Folder for every artefact.")] = Path("prunehead-demo"),
         data: Annotated[str | None, typer.Option("--data", "-d", help="Use this KS data instead of synthesizing "
                                                                      "(see `prunehead eval --help`).")] = None,
         arch: Annotated[str, typer.Option(help="Architecture trained from scratch (log-mel front end: learns "
                                                 "keywords in a minute or two).")] = "whisper-encoder-small",
         n_per_class: Annotated[int, typer.Option(help="Synthesized training clips per keyword.")] = 60,
         epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
         samples: Annotated[int, typer.Option(help="Samples HIB scores.")] = 24,
         steps: Annotated[int, typer.Option(help="HIB optimization steps per sample and layer.")] = 60,
         ratio: Annotated[float, typer.Option(help="Fraction of all heads removed.")] = 0.4,
         overwrite: Overwrite = False) -> None:
    """Run the whole pipeline on an embedded default: synthesize, train, score (HIB), prune, export.

    Each run starts afresh: it replaces the folder an earlier demo wrote (only that: any other existing
    --out needs --overwrite)."""
    import torch

    from . import data as data_cmd
    from . import export, finetune, prune, score

    fresh_output(out, overwrite)
    try:  # a failed or interrupted demo leaves no half-written folder behind
        torch.set_num_threads(1)  # small models on few cores: one thread avoids OpenMP spin-waits (measured 3-10x)
        started = time.time()
        paths = {"data": out / "data", "model": out / "model", "scores": out / "scores.json",
                 "pruned": out / "pruned", "onnx": out / "onnx"}
        if data is None:
            argv = ["data", "synth", "ks", "--out", str(paths["data"]), "--n-per-class", str(n_per_class)]
            _step("1/5 synthesize keywords (espeak-ng + flite)", argv)
            data_cmd.synth_cmd(data_cmd.TaskName("ks"), paths["data"], n_per_class=n_per_class, seed=0,
                               test_fraction=0.25, n_speakers=8)
            data = str(paths["data"])
        argv = ["finetune", "--model", f"arch:{arch}", "--data", data, "--out", str(paths["model"]), "--epochs",
                str(epochs), "--clip-seconds", "1"]
        _step(f"2/5 train a small model ({arch}) from scratch", argv)
        finetune.finetune_cmd(out=paths["model"], model=f"arch:{arch}", data=data, epochs=epochs, clip_seconds=1.0)
        argv = ["score", "--model", str(paths["model"]), "--data", data, "--scorer", "hib", "--samples", str(samples),
                "--steps", str(steps), "--out", str(paths["scores"])]
        _step("3/5 score every head with HIB", argv)
        score.score(model=str(paths["model"]), data=data, scorer="hib", out=paths["scores"], samples=samples,
                    steps=steps, batch_size=8)
        argv = ["prune", "--model", str(paths["model"]), "--scores", str(paths["scores"]), "--ratio", str(ratio),
                "--global", "--data", data, "--out", str(paths["pruned"])]
        _step(f"4/5 remove {ratio:.0%} of the heads (global) and re-evaluate", argv)
        prune.prune(model=str(paths["model"]), scores=paths["scores"], out=paths["pruned"], ratio=ratio,
                    global_=True, data=data, clip_seconds=1.0)
        argv = ["export", "onnx", "--model", str(paths["pruned"]), "--out", str(paths["onnx"])]
        _step("5/5 export the pruned model to ONNX, checked against PyTorch", argv)
        export.onnx(model=str(paths["pruned"]), out=paths["onnx"], repeats=10)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _summary(out, paths, time.time() - started)


def _summary(out: Path, paths: dict[str, Path], seconds: float) -> None:
    from .formatting import format_ratio

    report = json.loads((paths["pruned"] / "report.json").read_text())
    before, after = report.get("metrics_before", {}), report.get("metrics_after", {})
    typer.secho(f"\n== done in {seconds:.0f} s", bold=True)
    if before:
        typer.echo(f"accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} after removing "
                   f"{report['heads_removed']} of {report['before']['heads']} heads; "
                   f"params {format_ratio(report['before']['params'], report['after']['params'])}, "
                   f"MACs {format_ratio(report['before']['macs'], report['after']['macs'])}")
    for name, path in paths.items():
        if path.exists():
            typer.echo(f"  {name:<7} {path}")
    for extra in (paths["scores"].with_suffix(".png"), paths["onnx"] / "export.json"):
        if extra.exists():
            typer.echo(f"  {'':<7} {extra}")
