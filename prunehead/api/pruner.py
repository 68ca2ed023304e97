"""`prune`: decide which heads (and FFN neurons) go, from scores, a scorer, a saved plan or an accuracy
budget, then remove them from a copy of the model and report."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import surgery
from ..data import split_exists
from ..errors import InputError
from ..units.ffn import ffn_sites, prune_ffn_
from ..heads import head_adapter
from ..pruning.iterative import Target, prune_iteratively
from ..pruning.budget import (AUTO_SCORERS, UNITS, choose_scorer, max_drop_plan, max_drop_units_plan, removal_order,
                      target_macs_plan)
from ..pruning.plan import PruningPlan, load_scores, select_ffn
from ..pruning.report import change_report, recover
from ..scorers.parallel import model_fingerprint, run
from ..training.finetune import TrainConfig, pick_device
from ..workspace import ModelLike, Workspace, open_workspace

from .common import ScoresLike, ScoreSplit, check_counts, say, scores_for
from .scoring import build_scorer, score

AUTO = "auto"  # --scorer auto: choose the scorer by measurement (prunehead.pruning.budget)


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
          min_neurons_per_layer: int = 1, target_macs: float | None = None, units: str = "heads") -> PruneResult:
    """Decide which heads to remove, then (unless `dry_run`) remove them from a copy of `model`.

    The heads come from a saved `plan`, or from `scores` (a matrix or score file) / a `scorer` run on
    `samples` of `data`'s `score_split`, cut at `ratio` (global or per layer: `scope`) or `heads` per
    layer. With `rounds` > 1 the target is reached in rounds, re-scoring the remaining heads before each
    (Michel et al. 2019 §6). With `data`, the model is evaluated on `split` (default test) before and
    after, and `recover_epochs` fine-tune the pruned model on the train split.

    `max_drop` replaces the target: remove as many heads as possible while the metric on the selection
    split (`split`, default validation when the data has one, else train) stays within `max_drop` of the
    unpruned model (`prunehead.pruning.budget`); the test split, when there is one, is then reported apart.
    `scorer="auto"` scores with each of `auto_scorers` and keeps the ranking that holds the metric best on
    the selection split. `units` says what `max_drop` removes: "heads", "ffn" (neurons only) or "both"
    (heads and neurons in one order, least important per MAC first: `prunehead.pruning.budget.removal_order`;
    neuron scores from `ffn_scores` / `ffn_scorer`).

    `ffn_ratio` also removes feed-forward neurons (`prunehead.units.ffn`): floor(ffn_ratio * I) per layer (or
    ranked across layers: `ffn_scope="global"`, keeping `min_neurons_per_layer`), by `ffn_scores` (an L x I
    matrix or `--units ffn` score file) or `ffn_scorer` (taylor on `samples` of `data`'s `score_split`, or
    the data-free magnitude), scored once on the model as given; without `ratio` / `heads`, only neurons go.

    `target_macs` replaces every target: heads and neurons go, cheapest first (importance rank per MAC
    saved, `prunehead.pruning.budget.target_macs_plan`), until the model has at most that fraction of the dense
    model's MACs; head scores from `scores` / `scorer`, neuron scores from `ffn_scores` / `ffn_scorer`.

    Returns:
        the pruned model (None with `dry_run`: the decision needs no surgery), its plan, and the report
        (heads, parameters and MACs before / after, metrics, every round).
    """
    if target_macs is not None:
        return _prune_to_macs(model, target_macs, scores, scorer, ffn_scores, ffn_scorer, data, samples, score_split,
                              seed, split, batch_size, task, clip_seconds, recover_epochs, recover_lr, device, dry_run,
                              progress, options, min_heads_per_layer, min_neurons_per_layer,
                              other=(plan, ratio, heads, ffn_ratio, max_drop, rounds))
    _check_ffn(ffn_ratio, ffn_scores if units == "heads" else None, ffn_scorer, ffn_scope, plan, max_drop, scorer,
               data)
    _check_units(units, max_drop, scope, scores, scorer, ffn_scores, ffn_scorer, data)
    ffn_only = ffn_ratio is not None and ratio is None and heads is None
    if units == "ffn":  # --max-drop over neurons only: no head ranking ("ffn" stands in for the head scores)
        _check_prune("ffn", plan, ratio, heads, rounds, None, data, samples, recover_epochs, recover_lr, dry_run,
                     max_drop)
    elif not ffn_only:
        _check_prune(scores, plan, ratio, heads, rounds, scorer, data, samples, recover_epochs, recover_lr, dry_run,
                     max_drop)
    elif scores is not None or scorer is not None or rounds > 1:
        raise InputError("without --ratio or --heads only FFN neurons are removed: drop --scores, --scorer and "
                         "--rounds (or give --ratio)")
    else:  # the checks that do not concern heads (recovery, dry run)
        _check_prune(None, "ffn", None, None, 1, None, data, samples, recover_epochs, recover_lr, dry_run, None)
    if scorer == AUTO and options:
        raise InputError("--scorer auto runs each candidate with its defaults: drop --option")
    for name in (auto_scorers if scorer == AUTO else [scorer] if scorer is not None else []):
        build_scorer(name, options if scorer != AUTO else None, seed=seed)  # bad options fail before loading
    spec = str(model) if isinstance(model, (str, Path)) else None
    net = surgery.load(spec).to(pick_device(device)) if spec is not None else model  # GPU when present
    adapter = head_adapter(net)
    report: dict[str, Any] = {"model": spec, "scores": str(scores) if isinstance(scores, (str, Path)) else None,
                              "plan": str(plan) if isinstance(plan, (str, Path)) else None, "scorer": scorer,
                              "ratio": ratio, "heads": heads}
    ffn = None
    score_data = ScoreSplit(data, score_split, task, device, clip_seconds, spec)  # read once, by heads and neurons
    if ffn_ratio is not None:
        net, ffn = _ffn_plan(net, ffn_ratio, ffn_scores, ffn_scorer, ffn_scope, min_neurons_per_layer, samples, seed,
                             score_data)
        report["ffn"] = {"ratio": ffn_ratio, "scope": ffn_scope, **_ffn_source(ffn_scores, ffn_scorer),
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
                                     options, max_drop, auto_scorers, score_data,
                                     units=units, ffn=(ffn_scores, ffn_scorer, min_neurons_per_layer))
    split = split or "test"
    target = Target(ratio, heads, resolve_scope(ratio, heads, scope), min_heads_per_layer)
    target.check(surgery.plan_of(net))
    report["scope"] = target.scope
    matrix = scores_for(scores, net) if scores is not None else None
    if scorer is not None:
        ws = score_data(net)
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
           progress: bool, ffn: PruningPlan | None = None, ws: Workspace | None = None,
           ranking: torch.Tensor | None = None) -> PruneResult:
    """Remove the heads (in rounds when re-scoring), then the FFN neurons of `ffn` (or of a plan `target`),
    evaluating (on `ws`, else `split` of `data`) and recovering with `data` when given. `ranking`: the head
    scores that decided a plan `target` (recorded for the report and its picture)."""
    if dry_run:  # a saved plan: nothing to decide
        return PruneResult(None, target, {**report, "pruned_heads": target.to_json()["pruned_heads"]})
    if ws is None and data is not None:
        ws = open_workspace(net, data, split, task=task, device=device, batch_size=batch_size,
                            clip_seconds=clip_seconds, source=spec)
    if ws is not None:
        net = ws.model
        report["data"] = {"spec": data, "split": split, "samples": ws.dataset.num_rows}
        report["metrics_before"] = ws.evaluate(progress=progress)
    measure = (lambda m: ws.evaluate(m, progress=progress)) if ws is not None else None
    if isinstance(target, PruningPlan):
        pruned = surgery.prune_(copy.deepcopy(net), target)
        history = [{"round": 1, "heads_removed": target.num_pruned - surgery.plan_of(net).num_pruned,
                    "heads_removed_total": target.num_pruned, "pruned_heads": target.to_json()["pruned_heads"],
                    "scored_by": "plan" if ranking is None else "ranking",
                    "scores": ranking.tolist() if ranking is not None else None,
                    **({"metrics": measure(pruned)} if measure else {})}]
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
                          max_drop: float | None, auto_scorers: Sequence[str], score_data: ScoreSplit,
                          units: str = "heads",
                          ffn: tuple = (None, "taylor", 1)) -> PruneResult:
    """`--max-drop` and / or `--scorer auto`: decide on the selection split, apply once, report test apart.
    `ffn` = (neuron scores, neuron scorer, per-layer floor) for `units` "ffn" / "both"."""
    tell = say if progress else None
    selection = open_workspace(net, data, split or _selection_split(data),
                               task=task, device=device, batch_size=batch_size, clip_seconds=clip_seconds, source=spec)
    net = selection.model
    score_data.share_(selection)  # scoring on the selection split reads it once
    report.update(scope=scope, selection={"split": selection.split, "samples": selection.dataset.num_rows})
    if scorer == AUTO:
        ws = score_data(net)
        drawn = ws.draw(samples, seed, 8)
        report["score_samples"] = drawn.paths
        rankings = {}
        for name in auto_scorers:
            if tell:
                tell(f"auto: scoring with {name} on {len(drawn.paths)} samples of {score_split}")
            method = build_scorer(name, None, task=ws.task.name, seed=seed)
            method.progress = progress
            rankings[name] = run(method, net, drawn.batches, ws.task.objective, progress=progress).scores
        choice = choose_scorer(net, rankings, selection.evaluate, max_drop=max_drop, ratio=ratio, heads=heads,
                               scope=scope, min_heads_per_layer=min_heads)
        report["auto"] = {"chosen": choice.best, "candidates": choice.candidates}
        report["scorer"] = choice.best
        matrix = rankings[choice.best]
        if tell:
            tell(f"auto: {choice.best} keeps the metric best on the {selection.split} split")
    elif units == "ffn":
        matrix = None
    elif scorer is not None:
        matrix = score(score_data(net), scorer=scorer, samples=samples, seed=seed, progress=progress,
                       **dict(options or {})).scores
    else:
        matrix = scores_for(scores, net)
    if max_drop is not None and units != "heads":
        ffn_scores, ffn_scorer, min_neurons = ffn
        net, neurons = _ffn_matrix(net, ffn_scores, ffn_scorer, samples, seed, score_data)
        order = removal_order(net, matrix, neurons, min_heads_per_layer=min_heads, min_neurons_per_layer=min_neurons)
        search = max_drop_units_plan(net, order, selection.evaluate, max_drop, progress=tell)
        report["ffn"] = {**_ffn_source(ffn_scores, ffn_scorer),
                         "neurons_removed": search.plan.num_pruned_ffn - surgery.plan_of(net).num_pruned_ffn}
        report["max_drop"] = {"budget": max_drop, "units": units, **search.to_json()}
        chosen = search.plan
    elif max_drop is not None:
        search = max_drop_plan(net, matrix, selection.evaluate, max_drop, scope=scope, min_heads_per_layer=min_heads,
                               progress=tell)
        report["max_drop"] = {"budget": max_drop, "units": units, **search.to_json()}
        chosen = search.plan
    else:
        chosen = Target(ratio, heads, scope, min_heads).plan(matrix, surgery.plan_of(net))
    if dry_run:
        return PruneResult(None, chosen, {**report, "pruned_heads": chosen.to_json()["pruned_heads"]})
    test = "test" if selection.split != "test" and split_exists(data, "test") else None
    return _apply(net, chosen, None, 1, report, data, spec, test or selection.split, task, device, batch_size,
                  clip_seconds, recover_epochs, recover_lr, seed, dry_run, progress,
                  ws=None if test else selection, ranking=matrix)  # the test split apart, else the selection split again



def _ffn_source(scores: ScoresLike | None, scorer: str) -> dict[str, str | None]:
    """Where the neuron scores came from, for the report: a file, or the scorer run here."""
    return {"scorer": None if scores is not None else scorer,
            "scores": str(scores) if isinstance(scores, (str, Path)) else None}


def _selection_split(data: str) -> str:
    """validation when the data has one, else train: selection never reads the test split by default."""
    return "validation" if split_exists(data, "validation") else "train"


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
    from ..scorers.ffn import METHODS

    if ffn_ratio is None:
        if ffn_scores is not None:
            raise InputError("--ffn-scores ranks FFN neurons for --ffn-ratio: give --ffn-ratio (or --max-drop with "
                             "--units both)")
        return
    if not (math.isfinite(ffn_ratio) and 0 <= ffn_ratio <= 1):
        raise InputError(f"--ffn-ratio must be within [0, 1], got {ffn_ratio}")
    if plan is not None:
        raise InputError("--plan applies a saved plan as it is (its pruned_ffn too): drop --ffn-ratio")
    if max_drop is not None or scorer == AUTO:
        raise InputError("--max-drop and --scorer auto choose how much goes: drop --ffn-ratio (--max-drop with "
                         "--units both removes FFN neurons too)")
    if ffn_scorer not in METHODS:
        raise InputError(f"--ffn-scorer must be one of {', '.join(METHODS)}, got {ffn_scorer!r}")
    if ffn_scope not in ("global", "per_layer"):
        raise InputError(f"FFN scope must be 'global' or 'per_layer', got {ffn_scope!r}")
    if ffn_scores is None and ffn_scorer == "taylor" and data is None:
        raise InputError("--ffn-ratio needs FFN scores: give --ffn-scores FILE, --data to score the neurons "
                         "(taylor), or --ffn-scorer magnitude")


def _check_units(units: str, max_drop: float | None, scope: str | None, scores: Any, scorer: str | None,
                 ffn_scores: Any, ffn_scorer: str, data: str | None) -> None:
    """One-line errors for `units` combinations that cannot work, before anything is loaded."""
    if units not in UNITS:
        raise InputError(f"--units must be one of {', '.join(UNITS)}, got {units!r}")
    if units == "heads":
        return
    if max_drop is None:
        raise InputError(f"--units {units} says what --max-drop removes: give --max-drop (--ffn-ratio and "
                         "--target-macs remove neurons without it)")
    if scope == "per_layer":
        raise InputError(f"--units {units} ranks heads and neurons in one order across layers: drop --per-layer")
    if units == "ffn" and (scores is not None or scorer is not None):
        raise InputError("--units ffn removes FFN neurons only: drop --scores and --scorer (use --ffn-scores or "
                         "--ffn-scorer)")
    if units == "both" and scores is None and scorer is None:
        raise InputError("--units both ranks heads too: give --scores FILE or --scorer NAME")
    if ffn_scores is None and ffn_scorer != "magnitude" and data is None:
        raise InputError("--units needs FFN scores: give --ffn-scores FILE or --data to score the neurons")


def _prune_to_macs(model: ModelLike, target: float, scores: ScoresLike | None, scorer: str | None,
                   ffn_scores: ScoresLike | None, ffn_scorer: str, data: str | None, samples: int, score_split: str,
                   seed: int, split: str | None, batch_size: int, task: str | None, clip_seconds: float | None,
                   recover_epochs: int, recover_lr: float, device: str | None, dry_run: bool, progress: bool,
                   options: Mapping[str, Any] | None, min_heads: int, min_neurons: int, other: tuple) -> PruneResult:
    """`--target-macs`: head and neuron scores, the cheapest units removed until the MAC budget is met."""
    if any(value is not None for value in other[:5]) or other[5] > 1:
        raise InputError("--target-macs chooses the heads and neurons itself: drop --plan, --ratio, --heads, "
                         "--ffn-ratio, --max-drop and --rounds")
    if scores is None and scorer is None:
        raise InputError("--target-macs ranks heads too: give --scores FILE or --scorer NAME with --data")
    _check_prune(None, "target-macs", None, None, 1, None, data, samples, recover_epochs, recover_lr, dry_run)
    if (scorer is not None or ffn_scores is None and ffn_scorer != "magnitude") and data is None:
        raise InputError("--target-macs scores on data here: give --data (or --scores and --ffn-scorer magnitude)")
    if scorer is not None:
        build_scorer(scorer, options, seed=seed)  # bad options fail before loading
    spec = str(model) if isinstance(model, (str, Path)) else None
    net = surgery.load(spec).to(pick_device(device)) if spec is not None else model  # GPU when present
    report: dict[str, Any] = {"model": spec, "scores": str(scores) if isinstance(scores, (str, Path)) else None,
                              "scorer": scorer, "ratio": None, "heads": None}
    score_data = ScoreSplit(data, score_split, task, device, clip_seconds, spec)  # read once, by heads and neurons
    if scorer is not None:
        ws = score_data(net)
        net = ws.model
        heads = score(ws, scorer=scorer, samples=samples, seed=seed, progress=progress, **dict(options or {})).scores
    else:
        heads = scores_for(scores, net)
    net, neurons = _ffn_matrix(net, ffn_scores, ffn_scorer, samples, seed, score_data)
    chosen, report["target_macs"] = target_macs_plan(net, heads, neurons, target, min_heads_per_layer=min_heads,
                                                      min_neurons_per_layer=min_neurons)
    if dry_run:
        return PruneResult(None, chosen, {**report, "pruned_heads": chosen.to_json()["pruned_heads"]})
    return _apply(net, chosen, None, 1, report, data, spec, split or "test", task, device, batch_size, clip_seconds,
                  recover_epochs, recover_lr, seed, dry_run, progress, ranking=heads)


def _ffn_plan(net: nn.Module, ratio: float, scores: ScoresLike | None, scorer: str, scope: str, min_neurons: int,
              samples: int, seed: int, score_data: ScoreSplit) -> tuple[nn.Module, PruningPlan]:
    """(the model, its plan plus the FFN neurons to remove): scores from `scores` or `scorer`, cut at `ratio`."""
    net, matrix = _ffn_matrix(net, scores, scorer, samples, seed, score_data)
    return net, select_ffn(matrix, surgery.plan_of(net), ratio=ratio, scope=scope,
                           min_neurons_per_layer=min_neurons)


def _ffn_matrix(net: nn.Module, scores: ScoresLike | None, scorer: str, samples: int, seed: int,
                score_data: ScoreSplit) -> tuple[nn.Module, torch.Tensor]:
    """(the model, its (L, I) FFN neuron scores): from `scores`, or scored with `scorer` on `score_data`."""
    from ..scorers.ffn import score_ffn

    sites = ffn_sites(net)
    expect = (len(sites), sites[0].intermediate_size)
    if isinstance(scores, torch.Tensor):
        if tuple(scores.shape) != expect:
            raise InputError(f"FFN scores are {tuple(scores.shape)} but the model has {expect[0]} x {expect[1]} "
                             "FFN neurons")
        matrix = scores
    elif scores is not None:
        matrix = load_scores(scores, expect=expect, units="ffn", model_fingerprint=model_fingerprint(net))
    elif scorer == "magnitude":
        matrix = score_ffn(net, method="magnitude")
    else:
        ws = score_data(net)
        net = ws.model
        matrix = score_ffn(net, ws.draw(samples, seed, 8).batches, ws.task.objective, method=scorer)
    return net, matrix
