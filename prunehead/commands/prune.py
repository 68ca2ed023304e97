"""`prunehead prune`: remove the lowest-scoring heads (or a saved plan's), at once or in rounds, save the
pruned model, optionally re-evaluate and recover it with a short fine-tune."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, Interrupted
from .formatting import model_label
from .options import (BatchSize, ClipSeconds, ConvScorer, ConvScores, Device, DryRun, FfnScorer, FfnScores, Fraction,
                      Global, Heads, LayerScorer, LayerScores, MinHeads, Model, Out, Overwrite, Positive, Ratio,
                      ScorerOptions, Task, inputs_of, parse_options, resume_hint)

Opt = typer.Option
FAR_FROM_TARGET = 0.05  # a --method l0 ranking that cut more than this (of the dense MACs) gets a warning
ScoreFile = Annotated[Path | None, Opt("--scores", "-s", show_default=False,
                                       help="Score file written by `prunehead score` (with --rounds > 1: the "
                                            "first round's scores).")]
PlanFile = Annotated[Path | None, Opt("--plan", show_default=False,
                                      help="Apply this plan.json (from `prune --dry-run` or another model) as it is.")]
Rounds = Annotated[int, Opt(min=1, help="Reach the target in K rounds, re-scoring the remaining heads with "
                                        "--scorer before each (needs --data).")]
ScorerName = Annotated[str | None, Opt(show_default=False,
                                       help="Score the heads here, on --data's --score-split: hib, attattr, "
                                            "gradient, occlusion, attention, random, a plugin, or auto (score "
                                            "with each of --auto-scorers, keep the one that holds the metric "
                                            "best on the selection split).")]
MaxDrop = Annotated[float | None, Opt(callback=Fraction, show_default=False,
                                      help="Instead of --ratio / --heads: remove as many heads (--units) as possible while "
                                           "accuracy on the selection split (--split; default validation when "
                                           "the data has one, else train) drops by at most this much (ASR: WER "
                                           "rises by at most this much). The test split is reported apart.")]


class SaveDtype(str, Enum):
    """Weight dtypes a pruned model can be saved in."""

    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


SaveDtypeOption = Annotated[SaveDtype | None, Opt(show_default=False,
                                                 help="Weight dtype of the saved model. [default: the source "
                                                      "checkpoint's, e.g. fp16 stays fp16]")]
AutoScorers = Annotated[str, Opt(help="Comma list of the candidates of --scorer auto.")]
SplitOption = Annotated[str | None, Opt(show_default=False,
                                        help="Split to evaluate on. [default: test; with --max-drop or --scorer "
                                             "auto, the selection split: validation when the data has one, "
                                             "else train]")]
ScoreSplitOption = Annotated[str, Opt(help="Split the scorer draws its samples from.")]
RecoverEpochs = Annotated[int, Opt(min=0, help="After pruning, fine-tune this many epochs on --data's train split "
                                               "(reported separately; --out gets the recovered model).")]
RecoverLr = Annotated[float, Opt(callback=Positive, help="Learning rate of the recovery fine-tune.")]
RepairMethod = Annotated[str | None, Opt(show_default=False,
                                        help="Training-free repair after the cut: bias (fold the removed heads' and "
                                             "neurons' mean output into the bias, FLAP) or lsq (least-squares refit "
                                             "of each pruned block's output projection, Kwon et al. 2022), "
                                             "calibrated on --repair-samples of --score-split; before any "
                                             "--recover-epochs.")]
RepairSamples = Annotated[int, Opt(min=1, help="Calibration samples of --repair.")]
TargetMacs = Annotated[float | None, Opt(callback=Fraction, show_default=False,
                                         help="Instead of every other target: remove heads and FFN neurons, "
                                              "least important per MAC first, until the model has at most "
                                              "this fraction of the dense model's MACs (head scores from --scores "
                                              "or --scorer, neuron scores from --ffn-scores or --ffn-scorer).")]
FfnRatio = Annotated[float | None, Opt(callback=Fraction, show_default=False,
                                      help="Also remove this fraction of each layer's feed-forward neurons "
                                           "(with --global: of all L*I, keeping --min-neurons-per-layer); "
                                           "without --ratio / --heads, only neurons.")]
Units = Annotated[str | None, Opt(show_default=False,
                                 help="What --max-drop or --target-macs removes: heads, ffn (feed-forward neurons), "
                                      "conv (front-end channels), layers (whole encoder layers), both (heads and "
                                      "ffn), all, or a comma list (one order: least important per MAC first; "
                                      "scores from --ffn-scores / --ffn-scorer, --conv-scores / --conv-scorer, "
                                      "--layer-scores / --layer-scorer). [default: heads; --target-macs: both]")]
ConvRatio = Annotated[float | None, Opt(callback=Fraction, show_default=False,
                                       help="Also remove this fraction of each conv layer's output channels in the "
                                            "front end (with --global: of all, keeping --min-channels-per-layer); "
                                            "without --ratio / --heads, only channels.")]
LayerRatio = Annotated[float | None, Opt(callback=Fraction, show_default=False,
                                        help="Also remove this fraction of the encoder's layers outright, the "
                                             "least important first (heads and neurons of a removed layer go with "
                                             "it); without --ratio / --heads, only layers.")]
RecoverDistill = Annotated[bool, Opt("--recover-distill",
                                     help="Recovery learns from the unpruned model too: its soft labels "
                                          "(--distill-temperature) and hidden states (--distill-layers), plus "
                                          "the labels weighted by --distill-labels (0: without them).")]
DistillTemperature = Annotated[float, Opt(callback=Positive, help="Softmax temperature of the soft labels.")]
DistillLabels = Annotated[float, Opt(min=0.0, help="Weight of the label loss in distillation (0: soft labels and "
                                                   "hidden states only).")]
DistillHidden = Annotated[float, Opt(min=0.0, help="Weight of the hidden-state distance (0: soft labels only).")]
DistillLayers = Annotated[str, Opt(help="Hidden states matched: all (every layer to the teacher layer it came "
                                        "from), last, none, or a comma list of the pruned model's layer ids.")]
Method = Annotated[str, Opt(help="rank: remove the lowest-scoring units (every target); l0: with --target-macs, "
                                  "learn hard concrete masks for --units with the weights on --data's train split, "
                                  "distilling from the unpruned model (--distill-*), under a Lagrangian that holds "
                                  "the expected MACs at the target; the units whose gates close go.")]
L0Epochs = Annotated[int, Opt(min=1, help="Passes over the train split of --method l0.")]
L0Lr = Annotated[float, Opt(callback=Positive, help="Learning rate of the weights in --method l0.")]
L0GateLr = Annotated[float, Opt(callback=Positive, help="Learning rate (Adam) of the gates in --method l0; the "
                                                        "Lagrange multipliers ascend by plain SGD at 10.")]
RecipeSamples = Annotated[int | None, Opt(min=1, show_default=False, help="Samples drawn (seeded) from the split "
                                         "for scoring. [default: 200, or the --recipe's [score] samples]")]
RecipeSeed = Annotated[int | None, Opt(min=0, show_default=False, help="Sample selection and scorer seed. "
                                       "[default: 0, or the --recipe's [score] seed]")]
Resume = Annotated[bool, Opt(help="Continue an interrupted --method l0 run from its checkpoint (OUT.ckpt, beside "
                                  "--out).")]
MinChannels = Annotated[int, Opt(min=1, help="Never leave a conv layer with fewer channels than this.")]
MinNeurons = Annotated[int, Opt(min=0, help="Never leave a layer with fewer FFN neurons than this.")]
RecipeFile = Annotated[Path | None, Opt(show_default=False,
                                       help="A recipe (recipes/*.toml): its data, its [score] scorer and its [prune] "
                                            "target, each unless given here.")]
EvalData = Annotated[str | None, Opt("--data", "-d", show_default=False,
                                     help="Evaluate before and after pruning on this data (as for `prunehead "
                                          "eval`); --scorer and recovery use it too.")]


def prune(model: Model, out: Out, scores: ScoreFile = None, plan: PlanFile = None, ratio: Ratio = None,
          heads: Heads = None, global_: Global = None, min_heads_per_layer: MinHeads = 0, rounds: Rounds = 1,
          scorer: ScorerName = None, samples: RecipeSamples = None, score_split: ScoreSplitOption = "train",
          seed: RecipeSeed = None,
          option: ScorerOptions = None, data: EvalData = None, split: SplitOption = None, batch_size: BatchSize = 16,
          task: Task = None, clip_seconds: ClipSeconds = None, recover_epochs: RecoverEpochs = 0,
          recover_lr: RecoverLr = 5e-5, device: Device = None, overwrite: Overwrite = False,
          dry_run: DryRun = False, max_drop: MaxDrop = None,
          auto_scorers: AutoScorers = "gradient,attention,occlusion,attattr",
          save_dtype: SaveDtypeOption = None, ffn_ratio: FfnRatio = None, ffn_scores: FfnScores = None,
          ffn_scorer: FfnScorer = "taylor", min_neurons_per_layer: MinNeurons = 1,
          target_macs: TargetMacs = None, units: Units = None, recipe: RecipeFile = None,
          conv_ratio: ConvRatio = None, conv_scores: ConvScores = None, conv_scorer: ConvScorer = "taylor",
          min_channels_per_layer: MinChannels = 1, repair: RepairMethod = None,
          repair_samples: RepairSamples = 64, layer_ratio: LayerRatio = None, layer_scores: LayerScores = None,
          layer_scorer: LayerScorer = "taylor", recover_distill: RecoverDistill = False,
          distill_temperature: DistillTemperature = 2.0, distill_labels: DistillLabels = 1.0,
          distill_hidden: DistillHidden = 1.0, distill_layers: DistillLayers = "all", method: Method = "rank",
          l0_epochs: L0Epochs = 1, l0_lr: L0Lr = 1e-4, l0_gate_lr: L0GateLr = 0.1, resume: Resume = False) -> None:
    """Remove the lowest-scoring heads (globally or per layer, at once or in --rounds, or as many as
    --max-drop allows), with --ffn-ratio feed-forward neurons, with --conv-ratio front-end channels, with
    --layer-ratio whole layers, and save to --out."""
    import json

    import torch

    from .. import api
    from ..output_guard import atomic_dir, check_output
    from .prune_request import request_from_flags
    from ..surgery import save_pretrained

    preset = None
    if recipe is not None:  # the recipe's data, head scorer (unless scores, a scorer or a plan are given), target
        from ..recipe import load_recipe
        from .options import TaskName

        r = load_recipe(recipe)
        data, task, preset = data or r.data.spec, task or TaskName(r.task), r.prune
        if scores is None and scorer is None and plan is None:
            scorer, ranking = r.score.scorer, r.ranking()
            samples, seed = samples or ranking.samples, seed if seed is not None else ranking.seed
            option = [*(f"{k}={v}" for k, v in ranking.options.items()), *(option or [])]
    samples, seed = samples or 200, seed or 0
    inputs = inputs_of(model, data, *(scores, plan, ffn_scores, conv_scores, layer_scores))
    check_output(out, overwrite, inputs=inputs)
    scope = None if global_ is None else "global" if global_ else "per_layer"
    request = request_from_flags(dict(
        scores=scores, plan=plan, ratio=ratio, heads=heads, scope=scope, min_heads_per_layer=min_heads_per_layer,
        rounds=rounds, scorer=scorer, data=data, samples=samples, score_split=score_split, seed=seed, split=split,
        batch_size=batch_size, task=task and task.value, clip_seconds=clip_seconds, recover_epochs=recover_epochs,
        recover_lr=recover_lr, dry_run=dry_run, options=parse_options(option), max_drop=max_drop,
        auto_scorers=[n.strip() for n in auto_scorers.split(",") if n.strip()], ffn_ratio=ffn_ratio,
        ffn_scores=ffn_scores, ffn_scorer=ffn_scorer, ffn_scope="global" if global_ else "per_layer",
        min_neurons_per_layer=min_neurons_per_layer, target_macs=target_macs, units=units, target=preset,
        conv_ratio=conv_ratio, conv_scores=conv_scores, conv_scorer=conv_scorer,
        conv_scope="global" if global_ else "per_layer", min_channels_per_layer=min_channels_per_layer,
        repair=repair, repair_samples=repair_samples, layer_ratio=layer_ratio, layer_scores=layer_scores,
        layer_scorer=layer_scorer, recover_distill=recover_distill, distill_temperature=distill_temperature,
        distill_labels=distill_labels, distill_hidden=distill_hidden, distill_layers=distill_layers, method=method,
        l0_epochs=l0_epochs, l0_lr=l0_lr, l0_gate_lr=l0_gate_lr))
    from ..specs import Checkpointing
    from ..training.engine import is_main_process

    checkpoint = _checkpoint(out, method, resume, overwrite)
    earlier = resume and checkpoint is not None and checkpoint.exists()  # continued: never removed on a failure
    try:
        result = api.prune(model, request.target, ranking=request.ranking, data=request.data, recover=request.recover,
                           device=device, dry_run=dry_run, progress=True,
                           checkpoint=Checkpointing(checkpoint, resume, resume_hint()) if checkpoint else None)
    except (Interrupted, KeyboardInterrupt, SystemExit):  # the checkpoint stays for --resume
        raise
    except BaseException:
        if checkpoint is not None and not earlier and is_main_process():  # a failed run leaves nothing (as `score`)
            checkpoint.unlink(missing_ok=True)
        raise
    if not is_main_process():  # launched data-parallel (recovery under torchrun): rank 0 writes and reports
        return
    _decision(result.report)
    typer.echo(f"plan: remove {result.plan.num_pruned} of {result.plan.num_layers * result.plan.num_heads} heads "
               f"{json.dumps(result.plan.to_json()['pruned_heads'])}")
    chosen = result.plan
    if chosen.pruned_ffn:
        widths = [chosen.intermediate_size - len(chosen.pruned_ffn.get(l, ())) for l in range(chosen.num_layers)]
        typer.echo(f"plan: remove {chosen.num_pruned_ffn} of {chosen.num_layers * chosen.intermediate_size} FFN "
                   f"neurons (widths per layer: {widths})")
    if chosen.pruned_conv:
        widths = {l: chosen.conv_width - len(ids) for l, ids in sorted(chosen.pruned_conv.items())}
        typer.echo(f"plan: remove {chosen.num_pruned_conv} conv channels of {chosen.conv_width} per layer "
                   f"(widths of the conv layers that lose some: {widths})")
    if chosen.pruned_layers:
        typer.echo(f"plan: remove {chosen.num_pruned_layers} of {chosen.num_layers} encoder layers "
                   f"{list(chosen.pruned_layers)}")
    if dry_run:
        with atomic_dir(out, overwrite, inputs=inputs) as tmp:
            result.plan.save(tmp / "plan.json")
        typer.echo(f"wrote {out}/plan.json")
        return
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:
        save_pretrained(result.model.cpu(), tmp, source=model,
                        dtype=getattr(torch, save_dtype.value) if save_dtype else None, report=result.report)
        (tmp / "report.json").write_text(json.dumps(result.report, indent=2) + "\n")
        _picture(result, tmp / "heads.png", model)
        if "l0" in result.report:
            from ..plots import plot_learning

            plot_learning(result.report["l0"]["history"], tmp / "l0.png", f"{model_label(model)}: --method l0")
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    _summary(result.report)
    typer.echo(f"wrote {out}" + (" (heads.png: the scores, pruned heads crossed out)" if
                                 (out / "heads.png").exists() else ""))


def _checkpoint(out: Path, method: str, resume: bool, overwrite: bool) -> Path | None:
    """Where --method l0 checkpoints (OUT.ckpt beside --out); an interrupted run's is continued with --resume or
    replaced with --overwrite, never lost."""
    from ..scorers.parallel import Checkpoint

    if method != "l0":
        if resume:
            raise InputError("--resume continues an interrupted --method l0 run: the other methods keep no checkpoint")
        return None
    path = out.with_name(out.name + ".ckpt")
    Checkpoint.guard(path, resume, overwrite)
    return path


def _picture(result, path: Path, model: str) -> None:
    """The head scores that decided the plan, with the removed heads crossed out (when scores decided it)."""
    rounds = result.report.get("rounds", [])
    scored = [r for r in rounds if r.get("scores") is not None]
    if not scored:
        return
    from ..plots import heatmap

    which = "" if len(rounds) == 1 else f" of round {scored[-1]['round']} (the last that scored)"
    scores = scored[-1]["scores"]
    plan = result.plan if len(scores) == result.plan.num_layers else None  # the input had lost layers already
    heatmap(scores, path, f"{model_label(model)}: head scores{which}", pruned=plan)


def _decision(report: dict) -> None:
    """What --scorer auto and --max-drop measured, in a few lines."""
    if "auto" in report:
        for name, entry in report["auto"]["candidates"].items():
            if "chosen" in entry:
                chosen = entry["chosen"]
                numbers = f"{chosen['heads_removed']} heads within budget, accuracy {chosen['accuracy']:.4f}"
            else:
                numbers = f"mean accuracy up to the target {entry['area']:.4f}"
            mark = "  <- chosen" if name == report["auto"]["chosen"] else ""
            typer.echo(f"auto: {name:<10} {numbers}{mark}")
    if "l0" in report:
        info = report["l0"]
        typer.echo(f"l0: the closed gates leave {info['closed_mac_fraction']:.3f} of the dense MACs (target "
                   f"{info['target']})" + ("; the rest was cut in the order of the learned log_alpha, not by "
                                           "closed gates: more --l0-epochs let the gates reach the target"
                                           if info["ranked_to_budget"] else ""))
        if info["ranked_to_budget"] and info["closed_mac_fraction"] - info["target"] > FAR_FROM_TARGET:
            typer.echo(f"warning: the ranking removed {info['closed_mac_fraction'] - info['target']:.2f} of the "
                       "dense MACs that training never took away: expect a large loss; train longer "
                       "(--l0-epochs) or add --recover-epochs", err=True)
    if "target_macs" in report:
        info = report["target_macs"]
        typer.echo(f"target-macs {info['target']}: planned {info['planned_macs'] / info['dense_macs']:.3f} of the "
                   f"dense MACs; the floor of these kinds (every unit down to the per-layer floors) is "
                   f"{info['floor_macs'] / info['dense_macs']:.3f}")
    if "max_drop" in report:
        search = report["max_drop"]
        neurons, channels = search["chosen"].get("neurons_removed"), search["chosen"].get("channels_removed")
        typer.echo(f"max-drop {search['budget']}: {search['chosen']['heads_removed']} heads "
                   + (f"+ {neurons} FFN neurons " if neurons is not None else "")
                   + (f"+ {channels} conv channels " if channels is not None else "")
                   + (f"({search['chosen']['mac_fraction']:.3f} of the dense MACs) " if neurons is not None else "")
                   + "removed, "
                   f"{report['selection']['split']} accuracy {search['unpruned']['accuracy']:.4f} -> "
                   f"{search['chosen']['accuracy']:.4f} ({len(search['probes'])} probes)")


def _summary(report: dict) -> None:
    b, a = report["before"], report["after"]
    from .formatting import format_ratio

    typer.echo(f"heads {b['heads']} -> {a['heads']}, params {b['params']:,} -> {a['params']:,} "
               f"({format_ratio(b['params'], a['params'])}), MACs {b['macs']:,} -> {a['macs']:,} "
               f"({format_ratio(b['macs'], a['macs'])})")
    split = report.get("data", {}).get("split", "test")
    if len(report["rounds"]) > 1:
        for entry in report["rounds"]:
            metric = f", {_main_metric(entry['metrics'])} ({split})" if "metrics" in entry else ""
            typer.echo(f"round {entry['round']}: {entry['heads_removed_total']} heads removed{metric}")
    if "metrics_after" in report:
        for key, after in report["metrics_after"].items():
            if key != "samples" and isinstance(after, float):
                tail = ""
                for stage in ("repair", "recovery"):
                    value = report.get(f"metrics_after_{stage}", {}).get(key)
                    tail += f" -> {value:.4f} after {stage}" if isinstance(value, float) else ""
                typer.echo(f"{key} ({split}): {report['metrics_before'][key]:.4f} -> {after:.4f}{tail}")


def _main_metric(metrics: dict[str, float]) -> str:
    key = "accuracy" if "accuracy" in metrics else next(iter(metrics))
    return f"{key} {metrics[key]:.4f}"
