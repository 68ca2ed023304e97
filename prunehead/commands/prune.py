"""`prunehead prune`: remove the lowest-scoring heads, save the pruned model, optionally re-evaluate."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..heads import head_adapter
from ..outputs import atomic_dir, check_output
from ..plan import load_scores
from ..pruning import plan_for, prune_and_report, resolve_scope
from ..surgery import load, save_pretrained
from .evaluate import BatchSize, ClipSeconds, Split, Task
from .options import Device, DryRun, Global, Heads, MinHeads, Model, Out, Overwrite, Ratio, Scores

EvalData = Annotated[str | None, typer.Option("--data", "-d", help="Evaluate before and after pruning on this "
                                                                   "data (see `prunehead eval --help`).")]


def prune(model: Model, scores: Scores, out: Out, ratio: Ratio = None, heads: Heads = None,
          global_: Global = None, min_heads_per_layer: MinHeads = 0, data: EvalData = None,
          split: Split = "test", batch_size: BatchSize = 16, task: Task = None, clip_seconds: ClipSeconds = None,
          device: Device = None, overwrite: Overwrite = False, dry_run: DryRun = False) -> None:
    """Remove the lowest-scoring heads (globally or per layer) and save the pruned model to --out."""
    check_output(out, overwrite)
    net = load(model)
    adapter = head_adapter(net)
    matrix = load_scores(scores, expect=(adapter.num_layers, adapter.num_heads))
    scope = resolve_scope(ratio, heads, global_)
    plan = plan_for(net, matrix, ratio=ratio, heads=heads, scope=scope, min_heads_per_layer=min_heads_per_layer)
    typer.echo(f"plan: remove {plan.num_pruned} of {plan.num_layers * plan.num_heads} heads "
               f"{json.dumps(plan.to_json()['pruned_heads'])}")
    if dry_run:
        with atomic_dir(out, overwrite) as tmp:
            plan.save(tmp / "plan.json")
        typer.echo(f"wrote {out}/plan.json")
        return
    pruned, report = prune_and_report(net, plan)
    report = {"model": model, "scores": str(scores), "ratio": ratio, "heads": heads, "scope": scope, **report}
    if data is not None:
        from ..workspace import open_workspace

        ws = open_workspace(net, data, split, task=task, device=device, batch_size=batch_size,
                            clip_seconds=clip_seconds, source=model)
        report["data"] = {"spec": data, "split": split, "samples": ws.dataset.num_rows}
        report["metrics_before"] = ws.evaluate(progress=True)
        report["metrics_after"] = ws.evaluate(pruned.to(next(ws.model.parameters()).device), progress=True)
    with atomic_dir(out, overwrite) as tmp:
        save_pretrained(pruned.cpu(), tmp, source=model)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _summary(report)
    typer.echo(f"wrote {out}")


def _summary(report: dict) -> None:
    b, a = report["before"], report["after"]
    typer.echo(f"heads {b['heads']} -> {a['heads']}, params {b['params']:,} -> {a['params']:,} "
               f"({report['params_ratio']:.1%}), MACs {b['macs']:,} -> {a['macs']:,} ({report['macs_ratio']:.1%})")
    if "metrics_after" in report:
        for key, after in report["metrics_after"].items():
            if key != "samples" and isinstance(after, float):
                typer.echo(f"{key}: {report['metrics_before'][key]:.4f} -> {after:.4f}")
