"""`prunehead prune`: remove the lowest-scoring heads and write the pruned model."""

from __future__ import annotations

import json

import typer

from ..heads import head_adapter
from ..outputs import atomic_dir, check_output
from ..plan import load_scores
from ..pruning import plan_for, prune_and_report, resolve_scope
from ..surgery import load, save_pretrained
from .options import DryRun, Global, Heads, MinHeads, Model, Out, Overwrite, Ratio, Scores


def prune(model: Model, scores: Scores, out: Out, ratio: Ratio = None, heads: Heads = None,
          global_: Global = None, min_heads_per_layer: MinHeads = 0, overwrite: Overwrite = False,
          dry_run: DryRun = False) -> None:
    """Remove the lowest-scoring heads (globally or per layer) and save the pruned model to --out."""
    check_output(out, overwrite)
    net = load(model)
    adapter = head_adapter(net)
    matrix = load_scores(scores, expect=(adapter.num_layers, adapter.num_heads))
    plan = plan_for(net, matrix, ratio=ratio, heads=heads, scope=resolve_scope(ratio, heads, global_),
                    min_heads_per_layer=min_heads_per_layer)
    typer.echo(f"plan: remove {plan.num_pruned} of {plan.num_layers * plan.num_heads} heads "
               f"{json.dumps(plan.to_json()['pruned_heads'])}")
    with atomic_dir(out, overwrite) as tmp:
        if dry_run:
            plan.save(tmp / "plan.json")
        else:
            pruned, report = prune_and_report(net, plan)
            report = {"model": model, "scores": str(scores), "ratio": ratio, "heads": heads,
                      "scope": resolve_scope(ratio, heads, global_), **report}
            save_pretrained(pruned, tmp, source=model)
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            b, a = report["before"], report["after"]
            typer.echo(f"heads {b['heads']} -> {a['heads']}, params {b['params']:,} -> {a['params']:,} "
                       f"({report['params_ratio']:.1%}), MACs {b['macs']:,} -> {a['macs']:,} "
                       f"({report['macs_ratio']:.1%})")
    typer.echo(f"wrote {out}")
