"""`prune(model, target)`: the one verb. A decider chosen by the target's type decides the plan; the
plan is then applied once to a copy of the model, evaluated before and after, optionally recovered, and
reported.

Deciders are registered per target type with `@decider(TargetType)` (the way torchao's `quantize_`
dispatches on its config type): `prunehead.api.deciders` holds the built-in ones, and a new target needs
only its value class and one decider, never a change here.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import surgery
from ..data import split_exists
from ..errors import InputError
from ..pruning.plan import PruningPlan
from ..pruning.report import change_report, recover
from ..pruning.targets import LearnedBudget, target_json
from ..scorers.parallel import model_fingerprint
from ..specs import Checkpointing, Data, Ranking, Recovery
from ..training.config import TrainConfig
from ..training.models import pick_device
from ..units.kinds import KINDS, remove_all_
from ..workspace import ModelLike, Workspace, open_workspace
from .common import ScoreSplit, scores_for


@dataclasses.dataclass
class PruneResult:
    """What `prune` returns: the pruned model (None for a dry run), its plan (everything it lost since it was
    dense, in the dense model's ids: `prunehead.surgery.history_of`) and the report."""

    model: nn.Module | None
    plan: PruningPlan
    report: dict[str, Any]


@dataclasses.dataclass
class Decision:
    """What a decider returns: the plan, what it adds to the report, the head scores that decided it (for
    the report's picture), and, when it removed units itself (rounds), the pruned copy and its rounds."""

    plan: PruningPlan
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    ranking: torch.Tensor | None = None
    pruned: nn.Module | None = None
    rounds: list[dict[str, Any]] | None = None
    evaluation: Workspace | None = None  # the split to report on, when the decider opened it already
    weights: nn.Module | None = None  # a model of the same layout to cut instead of the given one (trained by it)


Decider = Callable[["Context", Any], Decision]
DECIDERS: dict[type, Decider] = {}


def decider(target_type: type) -> Callable[[Decider], Decider]:
    """Register the function below as the decider of `target_type`."""

    def register(fn: Decider) -> Decider:
        DECIDERS[target_type] = fn
        return fn

    return register


class Context:
    """What a decider works with: the loaded model, the rankings per unit kind, the data (opened once per
    split), the device and the report so far."""

    def __init__(self, model: nn.Module, spec: str | None, rankings: dict[str, Ranking], data: Data | None,
                 device: str | None, progress: bool, dry_run: bool = False, checkpoint: Checkpointing | None = None):
        self.model, self.spec, self.rankings, self.data = model, spec, rankings, data
        self.device, self.progress, self.dry_run = device, progress, dry_run
        self.checkpoint = checkpoint  # for a decider that trains
        self.scoring = ScoreSplit(data.spec if data else None, data.score_split if data else "train",
                                  data.task if data else None, device, data.clip_seconds if data else None, spec)
        self.report: dict[str, Any] = {}
        self._draws: dict[tuple[int, int], Any] = {}  # (samples, seed) -> the score split's drawn batches

    def workspace(self, split: str) -> Workspace:
        """`split` of the data, on the model (InputError without data)."""
        data = self._data()
        ws = open_workspace(self.model, data.spec, split, task=data.task, device=self.device,
                            batch_size=data.batch_size, clip_seconds=data.clip_seconds, source=self.spec)
        self.model = ws.model
        return ws

    def ranking(self, kind: str) -> Ranking:
        if kind not in self.rankings:
            raise InputError(f"give a ranking for the {KINDS[kind].noun} (a score file or a scorer)")
        return self.rankings[kind]

    def matrix(self, kind: str) -> torch.Tensor:
        """The (L, W) scores of `kind`: from its ranking's file or matrix, else its scorer on the score split."""
        return self.matrix_by(kind, self.ranking(kind))

    def matrix_by(self, kind: str, ranking: Ranking) -> torch.Tensor:
        """The (L, W) scores of `kind` by `ranking`."""
        unit = KINDS[kind]
        if ranking.scores is not None and ranking.scorer is None:
            return self.read(kind, ranking.scores)
        if ranking.scorer in unit.data_free:  # the weights alone: no data read
            return unit.score(self.model, [], None, ranking, progress=self.progress)
        ws = self.scoring(self.model)
        self.model = ws.model
        key = (ranking.samples, ranking.seed)
        if key not in self._draws:  # one draw (feature extraction) for every kind and candidate scored alike
            self._draws[key] = ws.draw(ranking.samples, ranking.seed, 8)
        drawn = self._draws[key]
        if kind == "heads":
            self.report["score_samples"] = drawn.paths
        return unit.score(self.model, drawn.batches, ws.task.objective, ranking, task=ws.task.name,
                          progress=self.progress)

    def read(self, kind: str, scores: Any) -> torch.Tensor:
        """A score file or matrix of `kind`, checked against the model's grid (and weights)."""
        if kind == "heads":
            return scores_for(scores, self.model)
        from ..pruning.score_files import load_scores

        expect = KINDS[kind].grid(self.model)
        if isinstance(scores, torch.Tensor):
            if tuple(scores.shape) != expect:
                raise InputError(f"{KINDS[kind].noun} scores are {tuple(scores.shape)} but the model has "
                                 f"{expect[0]} x {expect[1]}")
            return scores
        return load_scores(scores, expect=expect, units=kind, model_fingerprint=model_fingerprint(self.model))

    def selection(self, split: str | None) -> Workspace:
        """The split a budget decides on: `split`, else validation when the data has one, else train (never
        test by default); shared with the scorers when it is their split too."""
        data = self._data()
        chosen = split or ("validation" if split_exists(data.spec, "validation") else "train")
        ws = self.workspace(chosen)
        self.scoring.share_(ws)
        self.report["selection"] = {"split": ws.split, "samples": ws.dataset.num_rows}
        return ws

    def apart(self, selection: Workspace) -> Workspace | None:
        """The split reported after a decision on `selection`: test when it is another split that exists, else
        `selection` itself."""
        data = self._data()
        if selection.split != "test" and split_exists(data.spec, "test"):
            return None
        return selection

    def _data(self) -> Data:
        if self.data is None:
            raise InputError("this target measures the metric on data: give --data")
        return self.data


def prune(model: ModelLike, target: Any, *, ranking: Ranking | Mapping[str, Ranking] | Any = None,
          data: Data | str | None = None, recover: Recovery | None = None, device: str | None = None,
          dry_run: bool = False, progress: bool = False, checkpoint: Checkpointing | None = None) -> PruneResult:
    """Decide which units go for `target` (a `Cut`, `AccuracyBudget`, `MacBudget`, `SavedPlan` or any
    registered target), then (unless `dry_run`) remove them from a copy of `model` and report.

    Args:
        ranking: how units are ranked: a `Ranking`, a score file or a matrix (for the heads), or
            {kind: Ranking} (e.g. {"heads": ..., "ffn": Ranking("taylor")}).
        data: scoring, budgets, evaluation before / after (on `data.split`, default test) and recovery read it.
        recover: fine-tune the pruned model on the train split afterwards (reported apart).
        checkpoint: where a decider that trains (`LearnedBudget`) saves its state, and whether it continues
            from there (`Checkpointing`).

    Returns:
        the pruned model (None with `dry_run`), its plan, and the report (the target and rankings as given,
        units, parameters and MACs before / after, metrics with their split, every round or probe).
    """
    decide = DECIDERS.get(type(target))
    if decide is None:
        raise InputError(f"no decider for a {type(target).__name__} target; one of: "
                         f"{', '.join(t.__name__ for t in DECIDERS)}")
    if checkpoint is not None and not isinstance(target, LearnedBudget):
        raise InputError("checkpoints and --resume are for the mask learning of --method l0; drop --resume")
    rankings = _rankings(ranking)
    data = Data.of(data)
    if recover is not None and data is None:
        raise InputError("--recover-epochs fine-tunes on the train split of --data: give --data")
    if dry_run and recover is not None:
        raise InputError("--dry-run only decides the plan (no surgery): drop --recover-epochs and --rounds")
    spec = str(model) if isinstance(model, (str, Path)) else None
    net = surgery.load(spec).to(pick_device(device)) if spec is not None else model  # GPU when present
    ctx = Context(net, spec, rankings, data=data, device=device, progress=progress, dry_run=dry_run,
                  checkpoint=checkpoint)
    ctx.report.update(_given(spec, target, rankings))
    decision = decide(ctx, target)
    report = {**ctx.report, **decision.report}
    if dry_run:
        return PruneResult(None, decision.plan, {**report, "pruned_heads": decision.plan.to_json()["pruned_heads"]})
    return _apply(ctx, decision, report, recover)


def _rankings(ranking: Any) -> dict[str, Ranking]:
    if ranking is None:
        return {}
    if isinstance(ranking, Mapping):
        unknown = set(ranking) - set(KINDS)
        if unknown:
            raise InputError(f"rankings for unknown unit kinds {sorted(unknown)}; kinds: {', '.join(KINDS)}")
        return {kind: Ranking.of(r) for kind, r in ranking.items()}
    return {"heads": Ranking.of(ranking)}


def _given(spec: str | None, target: Any, rankings: dict[str, Ranking]) -> dict[str, Any]:
    """The report's record of what was asked: the target and rankings as given (and the older flat keys)."""
    heads = rankings.get("heads")
    amount = getattr(target, "amounts", {}).get("heads")
    return {"model": spec, "target": target_json(target), "rankings": {k: r.to_json() for k, r in rankings.items()},
            "scores": str(heads.scores) if heads is not None and isinstance(heads.scores, (str, Path)) else None,
            "plan": getattr(target, "source", None), "scorer": heads.scorer if heads is not None else None,
            "ratio": amount.ratio if amount is not None else None,
            "heads": amount.count if amount is not None else None}


def _apply(ctx: Context, decision: Decision, report: dict[str, Any], recovery: Recovery | None) -> PruneResult:
    """Remove the decided units from a copy (unless the decider did), evaluate before / after, recover."""
    ws = decision.evaluation
    if ws is None and ctx.data is not None:
        ws = ctx.workspace(ctx.data.split or "test")
    net = ws.model if ws is not None else ctx.model
    if ws is not None:
        report["data"] = {"spec": ctx.data.spec, "split": ws.split, "samples": ws.dataset.num_rows}
        report["metrics_before"] = ws.evaluate(progress=ctx.progress)
    base = decision.weights if decision.weights is not None else net
    pruned = decision.pruned if decision.pruned is not None else remove_all_(copy.deepcopy(base), decision.plan)
    if decision.pruned is not None:  # heads went in rounds: the other kinds now
        remove_all_(pruned, dataclasses.replace(decision.plan, pruned_heads={}))
    rounds = decision.rounds or [_one_round(net, decision)]
    report.update(change_report(net, pruned), rounds=rounds, recovered=recovery is not None)
    if ws is not None:  # rounds were evaluated as they went (heads only); with neurons gone too, again
        last = rounds[-1].get("metrics") if decision.rounds else None
        heads_only = not (decision.plan.pruned_ffn or decision.plan.pruned_conv or decision.plan.pruned_layers)
        after = last if last is not None and heads_only else ws.evaluate(pruned, progress=ctx.progress)
        report["metrics_after"] = after
        if decision.rounds is None:
            rounds[0]["metrics"] = after
    if recovery is not None and recovery.repair is not None:
        report["repair"] = _repair_(ctx, net, pruned, recovery)
        if ws is not None:
            report["metrics_after_repair"] = ws.evaluate(pruned, progress=ctx.progress)
    if recovery is not None and recovery.epochs:
        cfg = TrainConfig(epochs=recovery.epochs, lr=recovery.lr, head_lr=recovery.lr, batch_size=ctx.data.batch_size,
                          seed=recovery.seed, eval_split=None, clip_seconds=ctx.data.clip_seconds,
                          freeze_feature_encoder=False if decision.plan.pruned_conv else None)  # a cut front end adapts
        pruned, report["recovery"] = recover(pruned, ctx.data.spec, cfg, source=ctx.spec, task=ws.task.name,
                                             device=ctx.device, teacher=net if recovery.distill else None,
                                             distill=recovery.distill)
        report["metrics_after_recovery"] = ws.evaluate(pruned.to(pick_device(ctx.device)), progress=ctx.progress)
    return PruneResult(pruned, surgery.history_of(pruned), report)


def _repair_(ctx: Context, net: nn.Module, pruned: nn.Module, recovery: Recovery) -> dict[str, Any]:
    """Refit `pruned`'s projections to `net`'s outputs on seeded samples of the score split (in place)."""
    from ..pruning.repair import calibrate, repair_

    drawn = ctx.scoring(net).draw(recovery.repair_samples, recovery.seed, ctx.data.batch_size)
    if ctx.progress:
        from ..progress import say

        say(f"repair: calibrating on {len(drawn.paths)} samples of {ctx.scoring.split} ({recovery.repair})")
    sites = calibrate(net, drawn.batches)
    return {**repair_(pruned, net, sites, recovery.repair), "samples": len(drawn.paths), "split": ctx.scoring.split}


def _one_round(net: nn.Module, decision: Decision) -> dict[str, Any]:
    """The report's single round of a plan applied at once."""
    plan, before = decision.plan, surgery.plan_of(net)
    return {"round": 1, "heads_removed": plan.num_pruned - before.num_pruned, "heads_removed_total": plan.num_pruned,
            "pruned_heads": plan.to_json()["pruned_heads"],
            "scored_by": "plan" if decision.ranking is None else "ranking",
            "scores": decision.ranking.tolist() if decision.ranking is not None else None}
