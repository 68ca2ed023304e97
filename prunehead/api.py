"""The application layer: one library function per command, data -> score -> plan -> prune -> evaluate.

Each `prunehead <command>` parses its options, calls the function of the same name here, prints and
writes files. The functions take paths / hub ids or loaded objects, load through one loader
(`prunehead.workspace.open_workspace`), and never write files themselves (except `finetune`, whose
output folder is its result).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import surgery
from .curves import parse_ratios, run_sweep
from .data import split_exists
from .errors import InputError
from .ffn import ffn_sites, prune_ffn_
from .heads import head_adapter
from .iterative import Target, prune_iteratively
from .budget import AUTO_SCORERS, best_curve, choose_scorer, max_drop_plan
from .plan import PruningPlan, load_scores, read_json, save_scores, select_ffn
from .precision import check_dtype
from .pruning import change_report, recover
from .scorers import get_scorer
from .scorers.base import Scorer, to_device
from .scorers.hib import value_statistics
from .scorers.parallel import model_fingerprint, run, run_key
from .scorers.registry import option_names
from .train import TrainConfig, pick_device
from .workspace import ModelLike, Workspace, open_workspace

ScoresLike = torch.Tensor | str | Path


# ------------------------------------------------------------------------------------------------ evaluate

def evaluate(model: ModelLike, data: str, *, split: str = "test", task: str | None = None, batch_size: int = 16,
             clip_seconds: float | None = None, device: str | None = None, on_error: str = "stop",
             source: str | Path | None = None, dtype: str = "float32", workers: int = 0,
             progress: bool = False) -> dict[str, float]:
    """The metrics of `model` on `split` of `data` (accuracy; ASR: wer, cer and accuracy = 1 - WER).

    `dtype` "bfloat16" / "float16" evaluates under autocast (prunehead.precision). Cost: one forward pass
    per sample (plus `generate` for Whisper ASR).
    """
    check_dtype(dtype)
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds, on_error=on_error, source=source, workers=workers)
    ws.dtype = dtype
    return ws.evaluate(progress=progress)


# --------------------------------------------------------------------------------------------------- score

@dataclasses.dataclass
class ScoreResult:
    """What `score` returns: the (L, H) matrix (higher = more important) and how it was made."""

    scores: torch.Tensor
    scorer: str
    params: dict[str, Any]
    task: str
    sample_paths: list[str]
    spread: torch.Tensor | None = None  # (L, H) std of per-sample results, for sample scorers
    world_size: int = 1
    device: str = "cpu"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # model, data, split, seed, ...
    model_fingerprint: str | None = None  # of the scored weights: prune / sweep warn when it differs
    resumed: int = 0  # samples taken from a checkpoint rather than scored in this run
    units: str = "heads"  # or "ffn": an (L, I) matrix of feed-forward neurons

    def save(self, path: str | Path) -> None:
        """Write the versioned score file (`prunehead.load_scores` reads it back)."""
        from . import __version__
        import transformers

        extra = {**{k: v for k, v in self.settings.items() if k != "model"}, "params": self.params,
                 "samples": len(self.sample_paths), "task": self.task, "sample_paths": self.sample_paths,
                 "spread": self.spread.tolist() if self.spread is not None else None,
                 "world_size": self.world_size, "device": self.device,
                 "versions": {"prunehead": __version__, "torch": torch.__version__,
                              "transformers": transformers.__version__, "python": platform.python_version()}}
        save_scores(path, self.scores, self.scorer, str(self.settings.get("model", "")),
                    model_fingerprint=self.model_fingerprint, units=self.units, **extra)


def build_scorer(name: str, options: Mapping[str, Any] | None = None, *, task: str | None = None,
                 seed: int = 0) -> Scorer:
    """Scorer `name` with `options`; HIB gets the paper's per-task defaults, seeded scorers `seed`.

    Cheap: call it before loading anything to validate the options.
    """
    params = dict(options or {})
    if "seed" in option_names(name):
        params.setdefault("seed", seed)
    return get_scorer(name, task=task, **params)


def score(model: ModelLike | Workspace, data: str | None = None, scorer: str = "hib", *, split: str = "train",
          samples: int = 200, seed: int = 0, batch_size: int = 8, task: str | None = None,
          clip_seconds: float | None = None, reference_samples: int = 0, device: str | torch.device | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, key: str = "", progress: bool = False,
          units: str = "heads", workers: int = 0, **options: Any) -> ScoreResult:
    """Score every attention head of `model` on `samples` seeded samples of `split` of `data`.

    Args:
        model: a path, hub id or loaded model (with `data`), or an open `Workspace` of the split to draw from.
        scorer: a registered scorer (hib, attattr, gradient, occlusion, attention, random or a plugin).
        reference_samples: HIB only: estimate V's std from this many samples (0 = the scored ones).
        checkpoint, resume, key: per-batch checkpoint file, continue from it, and the run's identity.
        options: the scorer's options (`prunehead.scorers.registry.option_names(scorer)`).
        units: "heads", or "ffn" to score every FFN neuron instead (`scorer` taylor or magnitude; an (L, I)
            matrix, `prunehead.scorers.ffn`).

    Cost: the scorer's (see its docstring), on `samples` samples; data-parallel under torchrun.
    """
    check_counts(samples=samples, batch_size=batch_size)
    if units == "ffn":
        return _score_ffn(model, data, scorer, split, samples, seed, batch_size, task, clip_seconds, device,
                          reference_samples, checkpoint, options, workers)
    if units != "heads":
        raise InputError(f"--units must be heads or ffn, got {units!r}")
    if reference_samples and scorer != "hib":
        raise InputError("--reference-samples sets HIB's V statistics; it applies to --scorer hib only")
    build_scorer(scorer, options, seed=seed)  # fail on bad options before anything loads
    ws = model if isinstance(model, Workspace) else _workspace(model, data, split, task, device, clip_seconds,
                                                                  workers=workers)
    method = build_scorer(scorer, options, task=task or ws.task.name, seed=seed)
    method.progress = progress
    drawn = ws.draw(samples, seed, batch_size)
    if progress and hasattr(method, "cost"):
        _say(method.cost(len(drawn.paths), head_adapter(ws.model).kept_heads(ws.model)))
    if reference_samples:
        reference = ws.draw(reference_samples, seed, batch_size).batches
        where = next(ws.model.parameters()).device
        method.stats = value_statistics(ws.model, [to_device(b, where) for b in reference], method.min_std)
    if checkpoint is not None:  # resume only into the same weights, audio and options
        key = run_key(ws.model, drawn.paths, options=key)
    outcome = run(method, ws.model, drawn.batches, ws.task.objective, checkpoint=checkpoint, key=key, resume=resume,
                  progress=progress)
    settings = {"model": ws.source or type(ws.model).__name__, "data": data,
                "split": split, "seed": seed, "batch_size": batch_size, "reference_samples": reference_samples}
    return ScoreResult(outcome.scores, scorer, method.params(), ws.task.name, drawn.paths, outcome.spread,
                       outcome.world_size, next(ws.model.parameters()).device.type, settings,
                       model_fingerprint(ws.model), resumed=outcome.resumed)


def _score_ffn(model: ModelLike | Workspace, data: str | None, scorer: str, split: str, samples: int, seed: int,
               batch_size: int, task: str | None, clip_seconds: float | None, device: Any, reference_samples: int,
               checkpoint: Any, options: Mapping[str, Any], workers: int = 0) -> ScoreResult:
    """`score(..., units="ffn")`: the (L, I) FFN neuron scores (taylor on the drawn samples, or magnitude)."""
    from .scorers.ffn import METHODS, score_ffn

    if scorer not in METHODS:
        raise InputError(f"--units ffn scores with --scorer {' or '.join(METHODS)}, got {scorer!r}")
    if options or reference_samples or checkpoint is not None:
        raise InputError("--units ffn takes no scorer options, --reference-samples or checkpoints")
    ws = model if isinstance(model, Workspace) else _workspace(model, data, split, task, device, clip_seconds,
                                                                  workers=workers)
    drawn = ws.draw(samples, seed, batch_size) if scorer == "taylor" else None
    matrix = score_ffn(ws.model, drawn.batches if drawn else (), ws.task.objective, method=scorer)
    settings = {"model": ws.source or type(ws.model).__name__, "data": data, "split": split, "seed": seed,
                "batch_size": batch_size}
    return ScoreResult(matrix, scorer, {"normalize_layers": True}, ws.task.name, drawn.paths if drawn else [],
                       device=next(ws.model.parameters()).device.type, settings=settings,
                       model_fingerprint=model_fingerprint(ws.model), units="ffn")


# --------------------------------------------------------------------------------------------------- prune

@dataclasses.dataclass
class PruneResult:
    """What `prune` returns: the pruned model (None for a dry run), its plan and the report."""

    model: nn.Module | None
    plan: PruningPlan
    report: dict[str, Any]


def prune(model: ModelLike, *, scores: ScoresLike | None = None, plan: PruningPlan | str | Path | None = None,
          ratio: float | None = None, heads: int | None = None, scope: str | None = None,
          min_heads_per_layer: int = 0, rounds: int = 1, scorer: str | None = None, data: str | None = None,
          samples: int = 200, score_split: str = "train", seed: int = 0, split: str | None = None,
          batch_size: int = 16, task: str | None = None, clip_seconds: float | None = None,
          recover_epochs: int = 0, recover_lr: float = 5e-5, device: str | None = None, dry_run: bool = False,
          progress: bool = False, options: Mapping[str, Any] | None = None, max_drop: float | None = None,
          auto_scorers: Sequence[str] = AUTO_SCORERS, ffn_ratio: float | None = None,
          ffn_scores: ScoresLike | None = None, ffn_scorer: str = "taylor", ffn_scope: str = "per_layer",
          min_neurons_per_layer: int = 1) -> PruneResult:
    """Decide which heads to remove, then (unless `dry_run`) remove them from a copy of `model`.

    The heads come from a saved `plan`, or from `scores` (a matrix or score file) / a `scorer` run on
    `samples` of `data`'s `score_split`, cut at `ratio` (global or per layer: `scope`) or `heads` per
    layer. With `rounds` > 1 the target is reached in rounds, re-scoring the remaining heads before each
    (Michel et al. 2019 §6). With `data`, the model is evaluated on `split` (default test) before and
    after, and `recover_epochs` fine-tune the pruned model on the train split.

    `max_drop` replaces the target: remove as many heads as possible while the metric on the selection
    split (`split`, default validation when the data has one, else train) stays within `max_drop` of the
    unpruned model (`prunehead.budget`); the test split, when there is one, is then reported apart.
    `scorer="auto"` scores with each of `auto_scorers` and keeps the ranking that holds the metric best on
    the selection split.

    `ffn_ratio` also removes feed-forward neurons (`prunehead.ffn`): floor(ffn_ratio * I) per layer (or
    ranked across layers: `ffn_scope="global"`, keeping `min_neurons_per_layer`), by `ffn_scores` (an L x I
    matrix or `--units ffn` score file) or `ffn_scorer` (taylor on `samples` of `data`'s `score_split`, or
    the data-free magnitude), scored once on the model as given; without `ratio` / `heads`, only neurons go.

    Returns:
        the pruned model (None with `dry_run`: the decision needs no surgery), its plan, and the report
        (heads, parameters and MACs before / after, metrics, every round).
    """
    _check_ffn(ffn_ratio, ffn_scores, ffn_scorer, ffn_scope, plan, max_drop, scorer, data)
    ffn_only = ffn_ratio is not None and ratio is None and heads is None
    if not ffn_only:
        _check_prune(scores, plan, ratio, heads, rounds, scorer, data, samples, recover_epochs, recover_lr, dry_run,
                     max_drop)
    elif scores is not None or scorer is not None or rounds > 1:
        raise InputError("without --ratio or --heads only FFN neurons are removed: drop --scores, --scorer and "
                         "--rounds (or give --ratio)")
    else:  # the checks that do not concern heads (recovery, dry run)
        _check_prune(None, "ffn", None, None, 1, None, data, samples, recover_epochs, recover_lr, dry_run, None)
    for name in (auto_scorers if scorer == AUTO else [scorer] if scorer is not None else []):
        build_scorer(name, options if scorer != AUTO else None, seed=seed)  # bad options fail before loading
    spec = str(model) if isinstance(model, (str, Path)) else None
    net = surgery.load(spec) if spec is not None else model
    adapter = head_adapter(net)
    report: dict[str, Any] = {"model": spec, "scores": str(scores) if isinstance(scores, (str, Path)) else None,
                              "plan": str(plan) if isinstance(plan, (str, Path)) else None, "scorer": scorer,
                              "ratio": ratio, "heads": heads}
    ffn = None
    if ffn_ratio is not None:
        net, ffn = _ffn_plan(net, ffn_ratio, ffn_scores, ffn_scorer, ffn_scope, min_neurons_per_layer, data,
                             samples, score_split, seed, task, device, clip_seconds, spec)
        report["ffn"] = {"ratio": ffn_ratio, "scope": ffn_scope,
                         "scorer": None if ffn_scores is not None else ffn_scorer,
                         "scores": str(ffn_scores) if isinstance(ffn_scores, (str, Path)) else None,
                         "neurons_removed": ffn.num_pruned_ffn - surgery.plan_of(net).num_pruned_ffn,
                         "pruned_ffn": ffn.to_json()["pruned_ffn"]}
        if ffn_only:
            return _apply(net, ffn.union(surgery.plan_of(net)), None, 1, report, data, spec, split or "test", task,
                          device, batch_size, clip_seconds, recover_epochs, recover_lr, seed, dry_run, progress)
    if plan is not None:
        chosen = plan if isinstance(plan, PruningPlan) else PruningPlan.load(plan)
        if (chosen.num_layers, chosen.num_heads) != (adapter.num_layers, adapter.num_heads):
            raise InputError(f"{plan}: the plan is for {chosen.num_layers} x {chosen.num_heads} heads but the "
                             f"model has {adapter.num_layers} x {adapter.num_heads}; make the plan for this model")
        return _apply(net, chosen.union(surgery.plan_of(net)), None, rounds, report, data, spec, split or "test", task,
                      device, batch_size, clip_seconds, recover_epochs, recover_lr, seed, dry_run, progress)
    if max_drop is not None or scorer == AUTO:
        return _prune_by_measurement(net, spec, report, scores, ratio, heads, resolve_scope(ratio, heads, scope),
                                     min_heads_per_layer, scorer, data, samples, score_split, seed, split, batch_size,
                                     task, clip_seconds, recover_epochs, recover_lr, device, dry_run, progress,
                                     options, max_drop, auto_scorers)
    split = split or "test"
    target = Target(ratio, heads, resolve_scope(ratio, heads, scope), min_heads_per_layer)
    target.check(surgery.plan_of(net))
    report["scope"] = target.scope
    matrix = _scores(scores, net) if scores is not None else None
    if scorer is not None:
        ws = _workspace(net, data, score_split, task, device, clip_seconds, source=spec)
        drawn = ws.draw(samples, seed, 8)
        report["score_samples"] = drawn.paths
        method = build_scorer(scorer, options, task=ws.task.name, seed=seed)
        method.progress = progress

        def score_fn(pruned: nn.Module) -> torch.Tensor:
            return run(method, pruned, drawn.batches, ws.task.objective, progress=progress).scores

        net = ws.model
    else:
        score_fn = None
    if dry_run:
        chosen = target.plan(matrix if matrix is not None else score_fn(net), surgery.plan_of(net))
        chosen = chosen.union(ffn) if ffn is not None else chosen
        return PruneResult(None, chosen, {**report, "pruned_heads": chosen.to_json()["pruned_heads"]})
    return _apply(net, target, (score_fn, matrix), rounds, report, data, spec, split, task, device, batch_size,
                  clip_seconds, recover_epochs, recover_lr, seed, dry_run, progress, ffn=ffn)


def _apply(net: nn.Module, target: Target | PruningPlan, scoring: tuple | None, rounds: int, report: dict[str, Any],
           data: str | None, spec: str | None, split: str, task: str | None, device: str | None, batch_size: int,
           clip_seconds: float | None, recover_epochs: int, recover_lr: float, seed: int, dry_run: bool,
           progress: bool, ffn: PruningPlan | None = None) -> PruneResult:
    """Remove the heads (in rounds when re-scoring), then the FFN neurons of `ffn` (or of a plan `target`),
    evaluating and recovering with `data` when given."""
    if dry_run:  # a saved plan: nothing to decide
        return PruneResult(None, target, {**report, "pruned_heads": target.to_json()["pruned_heads"]})
    ws = None
    if data is not None:
        ws = open_workspace(net, data, split, task=task, device=device, batch_size=batch_size,
                            clip_seconds=clip_seconds, source=spec)
        net = ws.model
        report["data"] = {"spec": data, "split": split, "samples": ws.dataset.num_rows}
        report["metrics_before"] = ws.evaluate(progress=progress)
    measure = (lambda m: ws.evaluate(m, progress=progress)) if ws is not None else None
    if isinstance(target, PruningPlan):
        pruned = surgery.prune_(copy.deepcopy(net), target)
        history = [{"round": 1, "heads_removed": target.num_pruned - surgery.plan_of(net).num_pruned,
                    "heads_removed_total": target.num_pruned, "pruned_heads": target.to_json()["pruned_heads"],
                    "scored_by": "plan", "scores": None, **({"metrics": measure(pruned)} if measure else {})}]
    else:
        score_fn, matrix = scoring
        pruned, _, history = prune_iteratively(net, score_fn, target, rounds, first_scores=matrix, evaluate=measure)
    neurons = ffn if ffn is not None else target if isinstance(target, PruningPlan) else None
    ffn_applied = neurons is not None and bool(neurons.pruned_ffn)
    if ffn_applied:
        prune_ffn_(pruned, neurons)
    plan = surgery.plan_of(pruned)
    report.update(change_report(net, pruned), rounds=history, recovered=bool(recover_epochs))
    if ws is not None:  # after the FFN neurons went too, when they did (the rounds' metrics are heads only)
        report["metrics_after"] = measure(pruned) if ffn_applied else history[-1]["metrics"]
    if recover_epochs:
        cfg = TrainConfig(epochs=recover_epochs, lr=recover_lr, head_lr=recover_lr, batch_size=batch_size, seed=seed,
                          eval_split=None, clip_seconds=clip_seconds)
        pruned, report["recovery"] = recover(pruned, data, cfg, source=spec, task=ws.task.name, device=device)
        report["metrics_after_recovery"] = ws.evaluate(pruned.to(pick_device(device)), progress=progress)
    return PruneResult(pruned, plan, report)


def _prune_by_measurement(net: nn.Module, spec: str | None, report: dict[str, Any], scores: ScoresLike | None,
                          ratio: float | None, heads: int | None, scope: str, min_heads: int, scorer: str | None,
                          data: str, samples: int, score_split: str, seed: int, split: str | None, batch_size: int,
                          task: str | None, clip_seconds: float | None, recover_epochs: int, recover_lr: float,
                          device: str | None, dry_run: bool, progress: bool, options: Mapping[str, Any] | None,
                          max_drop: float | None, auto_scorers: Sequence[str]) -> PruneResult:
    """`--max-drop` and / or `--scorer auto`: decide on the selection split, apply once, report test apart."""
    say = _say if progress else None
    selection = open_workspace(net, data, split or _selection_split(data),
                               task=task, device=device, batch_size=batch_size, clip_seconds=clip_seconds, source=spec)
    net = selection.model
    report.update(scope=scope, selection={"split": selection.split, "samples": selection.dataset.num_rows})
    if scorer == AUTO:
        ws = _workspace(net, data, score_split, task, device, clip_seconds, source=spec)
        drawn = ws.draw(samples, seed, 8)
        report["score_samples"] = drawn.paths
        rankings = {}
        for name in auto_scorers:
            if say:
                say(f"auto: scoring with {name} on {len(drawn.paths)} samples of {score_split}")
            method = build_scorer(name, None, task=ws.task.name, seed=seed)
            rankings[name] = run(method, net, drawn.batches, ws.task.objective).scores
        choice = choose_scorer(net, rankings, selection.evaluate, max_drop=max_drop, ratio=ratio, heads=heads,
                               scope=scope, min_heads_per_layer=min_heads)
        report["auto"] = {"chosen": choice.best, "candidates": choice.candidates}
        report["scorer"] = choice.best
        matrix = rankings[choice.best]
        if say:
            say(f"auto: {choice.best} keeps the metric best on the {selection.split} split")
    elif scorer is not None:
        matrix = score(selection if score_split == selection.split else
                       _workspace(net, data, score_split, task, device, clip_seconds, source=spec),
                       scorer=scorer, samples=samples, seed=seed, progress=progress, **dict(options or {})).scores
    else:
        matrix = _scores(scores, net)
    if max_drop is not None:
        search = max_drop_plan(net, matrix, selection.evaluate, max_drop, scope=scope, min_heads_per_layer=min_heads,
                               progress=say)
        report["max_drop"] = {"budget": max_drop, **search.to_json()}
        chosen = search.plan
    else:
        chosen = Target(ratio, heads, scope, min_heads).plan(matrix, surgery.plan_of(net))
    if dry_run:
        return PruneResult(None, chosen, {**report, "pruned_heads": chosen.to_json()["pruned_heads"]})
    test = "test" if selection.split != "test" and split_exists(data, "test") else None
    return _apply(net, chosen, None, 1, report, data if test else None, spec, test or "test", task, device,
                  batch_size, clip_seconds, recover_epochs, recover_lr, seed, dry_run, progress)


AUTO = "auto"


def _selection_split(data: str) -> str:
    """validation when the data has one, else train: selection never reads the test split by default."""
    return "validation" if split_exists(data, "validation") else "train"


def _say(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def resolve_scope(ratio: float | None, heads: int | None, scope: str | None) -> str:
    """"global" or "per_layer": `heads` implies per layer, `ratio` defaults to global."""
    if scope is None:
        return "per_layer" if heads is not None else "global"
    if scope not in ("global", "per_layer"):
        raise InputError(f"scope must be 'global' or 'per_layer', not {scope!r}")
    return scope


def _check_prune(scores: Any, plan: Any, ratio: float | None, heads: int | None, rounds: int, scorer: str | None,
                 data: str | None, samples: int, recover_epochs: int, recover_lr: float, dry_run: bool,
                 max_drop: float | None = None) -> None:
    """One-line errors for option combinations that cannot work, before anything is loaded."""
    check_counts(rounds=rounds, samples=samples)
    if max_drop is not None:
        if not (math.isfinite(max_drop) and 0 <= max_drop <= 1):
            raise InputError(f"--max-drop must be within [0, 1], got {max_drop}")
        if ratio is not None or heads is not None or plan is not None:
            raise InputError("--max-drop chooses how many heads to remove: drop --ratio, --heads and --plan")
        if rounds > 1:
            raise InputError("--max-drop searches one ranking: drop --rounds")
        if data is None:
            raise InputError("--max-drop measures the metric on data: give --data")
    if scorer == AUTO and (data is None or scores is not None or rounds > 1):
        raise InputError("--scorer auto scores and compares rankings on --data: give --data, drop --scores "
                         "and --rounds")
    if plan is not None and (scores is not None or scorer is not None or ratio is not None or heads is not None):
        raise InputError("--plan applies a saved plan as it is: drop --scores, --scorer, --ratio and --heads")
    if max_drop is None and plan is None and ratio is None and heads is None:
        raise InputError("give exactly one of --ratio, --heads, --max-drop or --plan")
    if plan is None and scores is None and scorer is None:
        raise InputError("give --scores FILE, --scorer NAME with --data to score the heads here, or --plan FILE")
    if plan is not None and rounds > 1:
        raise InputError("--plan applies a saved plan in one go: drop --rounds")
    if rounds > 1 and scorer is None:
        raise InputError(f"--rounds {rounds} re-scores the remaining heads between rounds: give --scorer NAME "
                         "and --data")
    if rounds == 1 and scores is not None and scorer is not None:
        raise InputError("--scores and --scorer both score the heads of a one-round prune: drop one "
                         "(with --rounds > 1, --scores is used for the first round)")
    if scorer is not None and data is None:
        raise InputError(f"--scorer {scorer} scores the heads on data: give --data")
    if recover_epochs < 0 or not recover_lr > 0:
        raise InputError("--recover-epochs must be >= 0 and --recover-lr > 0")
    if recover_epochs and data is None:
        raise InputError("--recover-epochs fine-tunes on the train split of --data: give --data")
    if dry_run and (recover_epochs or rounds > 1):
        raise InputError("--dry-run only decides the plan (no surgery): drop --recover-epochs and --rounds")


def _check_ffn(ffn_ratio: float | None, ffn_scores: Any, ffn_scorer: str, ffn_scope: str, plan: Any,
               max_drop: float | None, scorer: str | None, data: str | None) -> None:
    """One-line errors for FFN options that cannot work, before anything is loaded."""
    from .scorers.ffn import METHODS

    if ffn_ratio is None:
        if ffn_scores is not None:
            raise InputError("--ffn-scores ranks FFN neurons for --ffn-ratio: give --ffn-ratio")
        return
    if not (math.isfinite(ffn_ratio) and 0 <= ffn_ratio <= 1):
        raise InputError(f"--ffn-ratio must be within [0, 1], got {ffn_ratio}")
    if plan is not None:
        raise InputError("--plan applies a saved plan as it is (its pruned_ffn too): drop --ffn-ratio")
    if max_drop is not None or scorer == AUTO:
        raise InputError("--max-drop and --scorer auto choose heads only: drop --ffn-ratio, or prune the FFN "
                         "neurons in a second `prunehead prune --ffn-ratio` run")
    if ffn_scorer not in METHODS:
        raise InputError(f"--ffn-scorer must be one of {', '.join(METHODS)}, got {ffn_scorer!r}")
    if ffn_scope not in ("global", "per_layer"):
        raise InputError(f"FFN scope must be 'global' or 'per_layer', got {ffn_scope!r}")
    if ffn_scores is None and ffn_scorer == "taylor" and data is None:
        raise InputError("--ffn-ratio needs FFN scores: give --ffn-scores FILE, --data to score the neurons "
                         "(taylor), or --ffn-scorer magnitude")


def _ffn_plan(net: nn.Module, ratio: float, scores: ScoresLike | None, scorer: str, scope: str, min_neurons: int,
              data: str | None, samples: int, score_split: str, seed: int, task: str | None, device: str | None,
              clip_seconds: float | None, spec: str | None) -> tuple[nn.Module, PruningPlan]:
    """(the model, its plan plus the FFN neurons to remove): scores from `scores` or `scorer`, cut at `ratio`."""
    from .scorers.ffn import score_ffn

    sites = ffn_sites(net)
    expect = (len(sites), sites[0].intermediate_size)
    if isinstance(scores, torch.Tensor):
        if tuple(scores.shape) != expect:
            raise InputError(f"FFN scores are {tuple(scores.shape)} but the model has {expect[0]} x {expect[1]} "
                             "FFN neurons")
        matrix = scores
    elif scores is not None:
        matrix = load_scores(scores, expect=expect, units="ffn")
    elif scorer == "magnitude":
        matrix = score_ffn(net, method="magnitude")
    else:
        ws = _workspace(net, data, score_split, task, device, clip_seconds, source=spec)
        net = ws.model
        matrix = score_ffn(net, ws.draw(samples, seed, 8).batches, ws.task.objective, method=scorer)
    return net, select_ffn(matrix, surgery.plan_of(net), ratio=ratio, scope=scope,
                           min_neurons_per_layer=min_neurons)


def check_counts(**counts: int) -> None:
    """InputError naming the first option (as its flag) that is below 1."""
    for name, value in counts.items():
        if value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _scores(scores: ScoresLike, net: nn.Module) -> torch.Tensor:
    """A score matrix for `net`: a tensor as it is, a file checked for shape (and warned about when it was
    made on other weights)."""
    adapter = head_adapter(net)
    expect = (adapter.num_layers, adapter.num_heads)
    if isinstance(scores, torch.Tensor):
        if tuple(scores.shape) != expect:
            raise InputError(f"scores are {tuple(scores.shape)} but the model has {expect[0]} x {expect[1]} heads")
        return scores
    return load_scores(scores, expect=expect, model_fingerprint=model_fingerprint(net))


def _workspace(model: ModelLike, data: str | None, split: str, task: str | None, device: Any,
               clip_seconds: float | None, source: str | None = None, workers: int = 0) -> Workspace:
    if data is None:
        raise InputError("scoring needs data: give --data")
    return open_workspace(model, data, split, task=task, device=device, clip_seconds=clip_seconds, source=source,
                          workers=workers)


# --------------------------------------------------------------------------------------------------- sweep

def sweep(model: ModelLike, data: str, scores: Mapping[str, ScoresLike] | Sequence[str | Path], *,
          split: str = "test", ratios: str | Sequence[float] | None = None, scope: str = "global",
          metric: str = "accuracy", batch_size: int = 16, task: str | None = None,
          clip_seconds: float | None = None, device: str | None = None, dtype: str = "float32",
          workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Pruning curves: the metric at every ratio (or, per layer without ratios, K = 0..H-1 heads per layer)
    for every score matrix and for random scores (5 seeds), heads gated instead of removed (== removed).

    Cost: one evaluation of the split per distinct plan.
    """
    check_dtype(dtype)
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds, workers=workers)
    ws.dtype = dtype
    adapter = head_adapter(ws.model)
    sets = _score_sets(scores, ws.model)
    points = parse_ratios(ratios) if isinstance(ratios, str) else list(ratios) if ratios is not None else None
    per_layer_heads = scope == "per_layer" and points is None
    result = run_sweep(ws.model, ws.evaluate, sets, metric=metric, scope=resolve_scope(None, None, scope),
                       ratios=points if points is not None else parse_ratios("0:0.9:0.1"),
                       heads=list(range(adapter.num_heads)) if per_layer_heads else None, progress=progress)
    result["best"] = best_curve(result)
    result.update(model=str(model) if isinstance(model, (str, Path)) else None, data=data, split=split,
                  samples=ws.dataset.num_rows,
                  score_files=[str(s) for s in (scores.values() if isinstance(scores, Mapping) else scores)
                               if isinstance(s, (str, Path))])
    return result


def _score_sets(scores: Mapping[str, ScoresLike] | Sequence[str | Path], net: nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(scores, Mapping):
        return {name: _scores(s, net) for name, s in scores.items()}
    sets: dict[str, torch.Tensor] = {}
    for file in scores:
        name = str(read_json(file).get("scorer", Path(file).stem))
        sets[name if name not in sets else f"{name}:{Path(file).stem}"] = _scores(file, net)
    return sets


# ------------------------------------------------------------------------------------------------ finetune

def finetune(model: ModelLike, data: str, out: str | Path, config: TrainConfig | None = None, *,
             task: str | None = None, resume: bool = False, device: str | None = None, on_error: str = "stop",
             eval_data: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Train `model` (path, hub id, `arch:NAME` or a loaded model) on `data`; the model, its processor
    and train.json go to `out`. A pruned model keeps its plan. Returns the train.json record.

    Cost: `config.epochs` passes (forward + backward) over the training split.
    """
    from .train import finetune as train

    cfg = config or TrainConfig()
    if isinstance(model, nn.Module):
        with tempfile.TemporaryDirectory(prefix="prunehead-finetune-") as tmp:
            surgery.save_pretrained(model, tmp)
            return train(tmp, data, out, cfg, task=task, resume=resume, device=device, on_error=on_error,
                         progress=progress, eval_data=eval_data)
    return train(str(model), data, out, cfg, task=task, resume=resume, device=device, on_error=on_error,
                 progress=progress, eval_data=eval_data)


# -------------------------------------------------------------------------------------------------- export

def export_onnx(model: ModelLike, out: str | Path, *, opset: int | None = None, optimize: bool = False,
                quantize: str | None = None, check: bool = True, atol: float = 1e-4, data: str | None = None,
                split: str = "test", baseline: ModelLike | None = None, repeats: int = 20,
                overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Export `model` to the ONNX folder `out` (model.onnx [+ optimized / int8], config.json, the
    preprocessing files, export.json), checked against PyTorch and timed beside the unpruned model.

    Returns the export summary (export.json). Cost: two exports, a few checking forwards, and
    (3 + repeats) ONNX Runtime runs per model, batch size and length.
    """
    from .export.pipeline import ExportOptions, export_model

    options = ExportOptions(opset=opset, optimize=optimize, quantize=quantize, check=check, atol=atol,
                            repeats=repeats)
    options.validate()
    spec = str(model) if isinstance(model, (str, Path)) else None
    loaded = surgery.load(spec) if spec is not None else model
    base_spec = str(baseline) if isinstance(baseline, (str, Path)) else None
    reference = surgery.load(base_spec) if base_spec is not None else baseline
    return export_model(loaded, out, options, baseline=reference, data=data, split=split, source=spec,
                        baseline_source=base_spec, overwrite=overwrite, progress=progress)
