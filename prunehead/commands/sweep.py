"""`prunehead sweep`: pruning curves (metric vs pruned fraction) for several score files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import (BatchSize, ClipSeconds, Data, Device, Dtype, DtypeName, Global, Model, Out, Overwrite, Split,
                      Task, Workers, inputs_of)

ScoreFiles = Annotated[list[Path], typer.Option("--scores", "-s", help="Score files (repeat, or list them "
                                                                      "after the options).")]


def sweep_cmd(model: Model, data: Data, out: Out, scores: ScoreFiles,
              more_scores: Annotated[list[Path] | None, typer.Argument(help="More score files.",
                                                                       show_default=False)] = None,
              ratios: Annotated[str | None, typer.Option(show_default=False,
                                                         help="START:STOP:STEP or a comma list. [default: "
                                                              "0:0.9:0.1; with --per-layer: K = 0..H-1 heads "
                                                              "per layer]")] = None,
              global_: Global = True, split: Split = "test", batch_size: BatchSize = 16, task: Task = None,
              metric: Annotated[str, typer.Option(help="Metric to plot (ASR: accuracy = 1 - WER).")] = "accuracy",
              clip_seconds: ClipSeconds = None, device: Device = None, dtype: Dtype = DtypeName.float32,
              workers: Workers = 0, overwrite: Overwrite = False) -> None:
    """Prune at every ratio (or K heads per layer) for every score file and random, and evaluate."""
    import json

    from ..api import sweep
    from ..curves import parse_ratios
    from ..outputs import atomic_dir, check_output
    from ..plots import curve_table, plot_curves

    files = [*scores, *(more_scores or [])]
    inputs = inputs_of(model, data, *files)
    check_output(out, overwrite, inputs=inputs)
    if ratios is not None:
        parse_ratios(ratios)  # a bad spec fails before anything loads
    result = sweep(model, data, files, split=split, ratios=ratios,
                   scope="global" if global_ is not False else "per_layer", metric=metric, batch_size=batch_size,
                   task=task and task.value, clip_seconds=clip_seconds, device=device, dtype=dtype.value,
                   workers=workers, progress=True)
    table = curve_table(result)
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:
        (tmp / "curve.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "curve.md").write_text(table)
        plot_curves(result, tmp / "curve.png", title=f"{Path(model).name} on {data} ({split})")
    typer.echo(table)
    typer.echo(f"wrote {out}/curve.json, curve.png, curve.md")
