"""`prunehead prune`: remove the lowest-scoring heads (at once or in steps, re-scoring in between), save the
pruned model, optionally re-evaluate and recover it with a short fine-tune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import torch
import typer
from torch import nn

from ..errors import InputError
from ..heads import head_adapter
from ..iterative import ScoreFn, Target, prune_iteratively
from ..outputs import atomic_dir, check_output
from ..plan import load_scores
from ..pruning import change_report, recover, resolve_scope
from ..surgery import load, plan_of, save_pretrained
from ..train import TrainConfig, pick_device
from .evaluate import BatchSize, ClipSeconds, Split, Task
from .options import Device, DryRun, Global, Heads, MinHeads, Model, Out, Overwrite, Ratio, ScorerOptions

if TYPE_CHECKING:
    from ..workspace import Workspace

Opt = typer.Option
EvalData = Annotated[str | None, Opt("--data", "-d", help="Evaluate before and after pruning on this data (see "
                                                         "`prunehead eval --help`); --scorer and recovery use it too.")]
ScoreFile = Annotated[Path | None, Opt("--scores", "-s", help="Score file written by `prunehead score` (with "
                                                             "--steps > 1: the first step's scores).")]
Steps = Annotated[int, Opt(help="Reach the target in K steps, re-scoring the remaining heads with --scorer "
                                "before each (needs --data).")]
ScorerName = Annotated[str | None, Opt(help="Score the heads here, on --data's --score-split: hib, attattr, "
                                            "gradient, occlusion, attention, random or a plugin.")]
Samples = Annotated[int, Opt(help="Samples the scorer draws (seeded) from --score-split.")]
ScoreSplit = Annotated[str, Opt(help="Split the scorer draws its samples from.")]
Seed = Annotated[int, Opt(help="Sample selection, scorer and recovery seed.")]
RecoverEpochs = Annotated[int, Opt(help="After pruning, fine-tune this many epochs on --data's train split "
                                        "(reported separately; --out gets the recovered model).")]
RecoverLr = Annotated[float, Opt(help="Learning rate of the recovery fine-tune (backbone and head).")]


def prune(model: Model, out: Out, scores: ScoreFile = None, ratio: Ratio = None, heads: Heads = None,
          global_: Global = None, min_heads_per_layer: MinHeads = 0, steps: Steps = 1, scorer: ScorerName = None,
          samples: Samples = 200, score_split: ScoreSplit = "train", seed: Seed = 0, option: ScorerOptions = None,
          data: EvalData = None,
          split: Split = "test", batch_size: BatchSize = 16, task: Task = None, clip_seconds: ClipSeconds = None,
          recover_epochs: RecoverEpochs = 0, recover_lr: RecoverLr = 5e-5, device: Device = None,
          overwrite: Overwrite = False, dry_run: DryRun = False) -> None:
    """Remove the lowest-scoring heads (globally or per layer, at once or in --steps) and save to --out."""
    check_output(out, overwrite)
    _check_options(scores, scorer, steps, samples, data, recover_epochs, recover_lr, dry_run)
    task = task and task.value
    score_fn, net = _scoring(model, data, scorer, score_split, task, samples, batch_size, seed, option, device) \
        if scorer else (None, load(model))
    adapter = head_adapter(net)
    target = Target(ratio, heads, resolve_scope(ratio, heads, global_), min_heads_per_layer)
    target.check(plan_of(net))
    first = load_scores(scores, expect=(adapter.num_layers, adapter.num_heads)) if scores else None
    ws = _workspace(net, model, data, split, task, device, batch_size, clip_seconds) if data and not dry_run else None
    report = {"model": model, "scores": str(scores) if scores else None, "scorer": scorer, "ratio": ratio,
              "heads": heads, "scope": target.scope}
    if ws is not None:
        report["data"] = {"spec": data, "split": split, "samples": ws.dataset.num_rows}
        report["metrics_before"] = ws.evaluate(progress=True)
    evaluate = (lambda m: ws.evaluate(m, progress=True)) if ws is not None else None
    pruned, plan, history = prune_iteratively(net, score_fn, target, steps, first_scores=first, evaluate=evaluate)
    typer.echo(f"plan: remove {plan.num_pruned} of {plan.num_layers * plan.num_heads} heads "
               f"{json.dumps(plan.to_json()['pruned_heads'])}")
    if dry_run:
        with atomic_dir(out, overwrite) as tmp:
            plan.save(tmp / "plan.json")
        typer.echo(f"wrote {out}/plan.json")
        return
    report.update(change_report(net, pruned), steps=history, recovered=bool(recover_epochs))
    if ws is not None:
        report["metrics_after"] = history[-1]["metrics"]
    if recover_epochs:
        cfg = TrainConfig(epochs=recover_epochs, lr=recover_lr, head_lr=recover_lr, batch_size=batch_size, seed=seed,
                          eval_split=None, clip_seconds=clip_seconds)
        pruned = _recover(pruned, ws, report, data, cfg, model, device)
    with atomic_dir(out, overwrite) as tmp:
        save_pretrained(pruned.cpu(), tmp, source=model)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _summary(report)
    typer.echo(f"wrote {out}")


def _check_options(scores: Path | None, scorer: str | None, steps: int, samples: int, data: str | None,
                   recover_epochs: int, recover_lr: float, dry_run: bool) -> None:
    """One-line errors for option combinations that cannot work, before anything is loaded."""
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if scores is None and scorer is None:
        raise InputError("give --scores FILE, or --scorer NAME with --data to score the heads here")
    if steps > 1 and scorer is None:
        raise InputError(f"--steps {steps} re-scores the remaining heads between steps: give --scorer NAME and --data")
    if steps == 1 and scores is not None and scorer is not None:
        raise InputError("--scores and --scorer both score the heads of a one-step prune: drop one "
                         "(with --steps > 1, --scores is used for the first step)")
    if scorer is not None and data is None:
        raise InputError(f"--scorer {scorer} scores the heads on data: give --data")
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if recover_epochs < 0 or recover_lr <= 0:
        raise InputError("--recover-epochs must be >= 0 and --recover-lr > 0")
    if recover_epochs and data is None:
        raise InputError("--recover-epochs fine-tunes on the train split of --data: give --data")
    if recover_epochs and dry_run:
        raise InputError("--dry-run writes only the plan: drop --recover-epochs")


def _workspace(net: nn.Module, model: str, data: str, split: str, task: str | None, device: str | None,
               batch_size: int, clip_seconds: float | None) -> Workspace:
    from ..workspace import open_workspace

    return open_workspace(net, data, split, task=task, device=device, batch_size=batch_size,
                          clip_seconds=clip_seconds, source=model)


def _recover(pruned: nn.Module, ws: Workspace, report: dict, data: str, cfg: TrainConfig, model: str,
             device: str | None) -> nn.Module:
    """The recovered model; its training record and metrics go into `report`."""
    typer.echo(f"recovery: fine-tuning {cfg.epochs} epoch(s) on {data} ({cfg.train_split})")
    recovered, report["recovery"] = recover(pruned, data, cfg, source=model, task=ws.task.name, device=device)
    report["metrics_after_recovery"] = ws.evaluate(recovered.to(pick_device(device)), progress=True)
    return recovered


def _scoring(model: str, data: str, scorer: str, split: str, task: str | None, samples: int, batch_size: int,
             seed: int, option: list[str] | None, device: str | None) -> tuple[ScoreFn, nn.Module]:
    """(scores of a model on the seeded samples `prunehead score` would draw, the loaded model)."""
    from .score import build_scorer, load_job, parse_options, resolve_settings

    settings = resolve_settings(model, data, scorer, None, split, task, samples, batch_size, seed,
                                parse_options(option or []))
    where = pick_device(device)
    job = load_job(settings, where)
    method = build_scorer(settings, job, where)
    method.progress = True  # the scorer's own bars (HIB steps, layers): re-scoring can take minutes per step

    def score_fn(net: nn.Module) -> torch.Tensor:
        left = sum(len(heads) for heads in head_adapter(net).kept_heads(net))
        typer.echo(f"scoring the {left} remaining heads with {scorer} on {len(job.paths)} samples", err=True)
        return method.score(net, job.batches, job.objective)

    return score_fn, job.model


def _summary(report: dict) -> None:
    b, a = report["before"], report["after"]
    typer.echo(f"heads {b['heads']} -> {a['heads']}, params {b['params']:,} -> {a['params']:,} "
               f"({report['params_ratio']:.1%}), MACs {b['macs']:,} -> {a['macs']:,} ({report['macs_ratio']:.1%})")
    if len(report["steps"]) > 1:
        for step in report["steps"]:
            metric = f", {_main_metric(step['metrics'])}" if "metrics" in step else ""
            typer.echo(f"step {step['step']}: {step['heads_removed_total']} heads removed{metric}")
    if "metrics_after" in report:
        for key, after in report["metrics_after"].items():
            if key != "samples" and isinstance(after, float):
                recovered = report.get("metrics_after_recovery", {}).get(key)
                tail = f" -> {recovered:.4f} after recovery" if isinstance(recovered, float) else ""
                typer.echo(f"{key}: {report['metrics_before'][key]:.4f} -> {after:.4f}{tail}")


def _main_metric(metrics: dict[str, float]) -> str:
    key = "accuracy" if "accuracy" in metrics else next(iter(metrics))
    return f"{key} {metrics[key]:.4f}"
