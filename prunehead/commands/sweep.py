"""`prunehead sweep`: pruning curves (metric vs pruned fraction) for several score files, or with
--ffn-ratios the speed / accuracy frontier of one (metric vs MACs and ONNX Runtime latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import (FfnScorer, FfnScores, BatchSize, ClipSeconds, Data, Device, Dtype, DtypeName, Global, Model, Out,
                      Overwrite, Positive, Split, Task, Workers, inputs_of)

Opt = typer.Option
ScoreFiles = Annotated[list[Path], Opt("--scores", "-s", help="Score files (repeat, or list them after the "
                                                              "options); with --ffn-ratios exactly one.")]
FfnRatios = Annotated[str | None, Opt(show_default=False,
                                      help="Draw the speed / accuracy frontier instead: every --ratios head ratio "
                                           "x each of these FFN ratios (START:STOP:STEP or a comma list; neurons "
                                           "cut per layer, as `prune --ffn-ratio`). Writes frontier.json/.md/.png.")]
Latency = Annotated[bool, Opt("--latency", help="Also export every frontier point to ONNX and time it with ONNX "
                                                "Runtime in turns with the dense model (median ms, speedup).")]
BatchSizes = Annotated[str | None, Opt(show_default=False,
                                       help="Comma list of batch sizes timed with --latency. [default: 1,8]")]
Seconds = Annotated[float | None, Opt(callback=Positive, show_default=False,
                                      help="Seconds of audio per input for the frontier's MAC count and latency "
                                           "(Whisper: its fixed window; text models: 128 tokens). [default: 1.0]")]
Repeats = Annotated[int | None, Opt(min=1, show_default=False,
                                    help="Timed runs per model and batch size with --latency; the median is "
                                         "reported. [default: 20]")]


def sweep_cmd(model: Model, data: Data, out: Out, scores: ScoreFiles,
              more_scores: Annotated[list[Path] | None, typer.Argument(help="More score files.",
                                                                       show_default=False)] = None,
              ratios: Annotated[str | None, Opt(show_default=False,
                                                help="START:STOP:STEP or a comma list. [default: 0:0.9:0.1; with "
                                                     "--per-layer: K = 0..H-1 heads per layer]")] = None,
              global_: Global = True, split: Split = "test", batch_size: BatchSize = 16, task: Task = None,
              metric: Annotated[str, Opt(help="Metric to plot (ASR: accuracy = 1 - WER).")] = "accuracy",
              clip_seconds: ClipSeconds = None, device: Device = None, dtype: Dtype = DtypeName.float32,
              workers: Workers = 0, ffn_ratios: FfnRatios = None, ffn_scores: FfnScores = None,
              ffn_scorer: FfnScorer = "taylor", latency: Latency = False, batch_sizes: BatchSizes = None,
              seconds: Seconds = None, repeats: Repeats = None, overwrite: Overwrite = False) -> None:
    """Prune at every ratio (or K heads per layer) for every score file and random, and evaluate; with
    --ffn-ratios, the speed / accuracy frontier of heads x FFN neurons."""
    from ..experiments.curves import parse_ratios
    from ..errors import InputError
    from ..output_guard import check_output

    files = [*scores, *(more_scores or [])]
    inputs = inputs_of(model, data, *files, ffn_scores)
    check_output(out, overwrite, inputs=inputs)
    if ratios is not None:
        parse_ratios(ratios)  # a bad spec fails before anything loads
    frontier = {"ffn_scores": ffn_scores, "latency": latency, "batch_sizes": batch_sizes, "seconds": seconds,
                "repeats": repeats}
    common = dict(split=split, ratios=ratios, scope="global" if global_ is not False else "per_layer",
                  metric=metric, batch_size=batch_size, task=task and task.value, clip_seconds=clip_seconds,
                  device=device, dtype=dtype.value, workers=workers, progress=True)
    if ffn_ratios is None:
        given = [f"--{k.replace('_', '-')}" for k, v in frontier.items() if v not in (None, False)]
        if given:
            verb = "belongs" if len(given) == 1 else "belong"
            raise InputError(f"{', '.join(given)} {verb} to the frontier: add --ffn-ratios (e.g. --ffn-ratios 0 "
                             "for heads only)")
        _curves(model, data, files, out, overwrite, inputs, common)
        return
    _frontier(model, data, files, out, overwrite, inputs, common, ffn_ratios=ffn_ratios, ffn_scores=ffn_scores,
              ffn_scorer=ffn_scorer, latency=latency, batch_sizes=_sizes(batch_sizes),
              seconds=1.0 if seconds is None else seconds, repeats=20 if repeats is None else repeats)


def _curves(model: str, data: str, files: list[Path], out: Path, overwrite: bool, inputs: list[Path],
            common: dict) -> None:
    """curve.json / .md / .png: every score file's curve and random's band."""
    from ..api import sweep
    from ..plots import curve_table, plot_curves

    _write(sweep(model, data, files, **common), "curve", curve_table, plot_curves, out, overwrite, inputs,
           f"{Path(model).name} on {data} ({common['split']})")


def _frontier(model: str, data: str, files: list[Path], out: Path, overwrite: bool, inputs: list[Path],
              common: dict, **frontier) -> None:
    """frontier.json / .md / .png: the grid's points, the Pareto-optimal ones marked (the library checks the
    options before anything loads)."""
    from ..api import sweep
    from ..plots import frontier_table, plot_frontier

    _write(sweep(model, data, files, **common, **frontier), "frontier", frontier_table, plot_frontier, out, overwrite,
           inputs, f"{Path(model).name} on {data} ({common['split']})")


def _write(result: dict, stem: str, table_of, plot, out: Path, overwrite: bool, inputs: list[Path],
           title: str) -> None:
    """<stem>.json, .md and .png into `out`, all or nothing; print the table."""
    import json

    from ..output_guard import atomic_dir

    table = table_of(result)
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:
        (tmp / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / f"{stem}.md").write_text(table)
        plot(result, tmp / f"{stem}.png", title=title)
    typer.echo(table)
    typer.echo(f"wrote {out}/{stem}.json, {stem}.png, {stem}.md")


def _sizes(spec: str | None) -> list[int] | None:
    """"1,8" -> [1, 8]; a one-line error for anything but positive whole numbers."""
    from ..errors import InputError

    if spec is None:
        return None
    try:
        sizes = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batch-sizes {spec!r}: give a comma list of whole numbers of at least 1, e.g. 1,8")
    return sizes
