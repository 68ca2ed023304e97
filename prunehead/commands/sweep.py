"""`prunehead sweep`: pruning curves (metric vs pruned fraction) for several score files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..heads import head_adapter
from ..outputs import atomic_dir, check_output
from ..plan import read_json, load_scores
from ..plots import curve_table, plot_curves
from ..sweep import parse_ratios, sweep
from ..workspace import open_workspace
from .evaluate import BatchSize, ClipSeconds, Data, Split, Task
from .options import Device, Global, Model, Out, Overwrite

ScoreFiles = Annotated[list[Path], typer.Option("--scores", "-s", help="Score files (repeat, or list them "
                                                                      "after the options).")]


def _score_sets(files: list[Path], expect: tuple[int, int]) -> dict[str, object]:
    sets = {}
    for file in files:
        name = str(read_json(file).get("scorer", file.stem))
        sets[name if name not in sets else f"{name}:{file.stem}"] = load_scores(file, expect=expect)
    return sets


def sweep_cmd(model: Model, data: Data, out: Out, scores: ScoreFiles,
              more_scores: Annotated[list[Path] | None, typer.Argument(help="More score files.",
                                                                       show_default=False)] = None,
              ratios: Annotated[str | None, typer.Option(help="START:STOP:STEP or a comma list "
                                                             "(default 0:0.9:0.1; with --per-layer and no "
                                                             "--ratios: K = 0..H-1 heads per layer).")] = None,
              global_: Global = True, split: Split = "test", batch_size: BatchSize = 16, task: Task = None,
              metric: Annotated[str, typer.Option(help="Metric to plot (ASR: accuracy = 1 - WER).")] = "accuracy",
              clip_seconds: ClipSeconds = None, device: Device = None, overwrite: Overwrite = False) -> None:
    """Prune at every ratio (or K heads per layer) for every score file and random, and evaluate."""
    check_output(out, overwrite)
    files = [*scores, *(more_scores or [])]
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds)
    adapter = head_adapter(ws.model)
    sets = _score_sets(files, (adapter.num_layers, adapter.num_heads))
    per_layer_heads = global_ is False and ratios is None
    result = sweep(ws.model, ws.evaluate, sets, metric=metric, scope="global" if global_ is not False else "per_layer",
                   ratios=parse_ratios(ratios or "0:0.9:0.1"),
                   heads=list(range(adapter.num_heads)) if per_layer_heads else None)
    result.update(model=model, data=data, split=split, samples=ws.dataset.num_rows,
                  score_files=[str(f) for f in files])
    table = curve_table(result)
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "curve.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "curve.md").write_text(table)
        plot_curves(result, tmp / "curve.png", title=f"{Path(model).name} on {data} ({split})")
    typer.echo(table)
    typer.echo(f"wrote {out}/curve.json, curve.png, curve.md")
