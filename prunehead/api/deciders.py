"""The built-in deciders of `prunehead.prune`, one per target type: each turns (model, target, rankings,
data) into a plan and the report's account of how it was chosen. Pure decisions, except that pruning in
rounds removes heads as it goes (it re-scores the model pruned so far)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import surgery
from ..errors import InputError
from ..pruning.budget import choose_scorer, max_drop_plan
from ..pruning.order import max_drop_units_plan, removal_order, target_macs_plan
from ..pruning.iterative import Target, prune_iteratively
from ..pruning.plan import PruningPlan
from ..pruning.targets import AccuracyBudget, Cut, LearnedBudget, MacBudget, SavedPlan, target_json
from ..specs import AUTO, Ranking
from ..units.kinds import KINDS, select_kept
from .pruner import Context, Decision, decider
from ..scorers.registry import build_scorer


def source(ranking: Ranking) -> dict[str, str | None]:
    """Where a kind's scores came from, for the report: a file, or the scorer run here."""
    return {"scorer": None if ranking.scores is not None else ranking.scorer,
            "scores": str(ranking.scores) if isinstance(ranking.scores, (str, Path)) else None}


@decider(SavedPlan)
def decide_saved(ctx: Context, target: SavedPlan) -> Decision:
    """A saved plan as it is (plus what the model had already lost)."""
    adapter_grid = KINDS["heads"].grid(ctx.model)
    if (target.plan.num_layers, target.plan.num_heads) != adapter_grid:
        raise InputError(f"{target.source or 'the plan'}: the plan is for {target.plan.num_layers} x "
                         f"{target.plan.num_heads} heads but the model has {adapter_grid[0]} x {adapter_grid[1]}; "
                         "make the plan for this model")
    return Decision(target.plan.union(surgery.plan_of(ctx.model)))


@decider(Cut)
def decide_cut(ctx: Context, cut: Cut) -> Decision:
    """A share of each kind: layers first, then neurons and channels scored once on the model as given, then
    heads at once or in rounds; the shares of heads and neurons are of the layers that stay (`select_kept`)."""
    plan, report = surgery.plan_of(ctx.model), {}
    for kind in ("layers", "ffn", "conv"):
        if kind in cut.amounts:
            amount = cut.amounts[kind]
            chosen = select_kept(kind, ctx.matrix(kind), plan, amount)
            report[kind] = {"ratio": amount.ratio, "scope": "global" if kind == "layers" else amount.scope,
                            **source(ctx.ranking(kind)),
                            **_removed(kind, plan, chosen)}
            plan = chosen
    if "heads" not in cut.amounts:
        return Decision(plan, report)
    amount = cut.amounts["heads"]
    target = Target(amount.ratio, amount.count, amount.scope, amount.min_per_layer)
    target.check(surgery.plan_of(ctx.model))
    report["scope"] = amount.scope
    ranking = ctx.ranking("heads")
    if ranking.scorer == AUTO:
        return _auto_cut(ctx, target, amount, plan, report, cut.rounds)
    if cut.rounds > 1:
        return _rounds(ctx, target, cut.rounds, plan, report)
    scores = ctx.read("heads", ranking.scores) if ranking.scores is not None else ctx.matrix("heads")
    return Decision(select_kept("heads", scores, plan, amount), report, ranking=scores)


REMOVED = {"ffn": ("neurons_removed", "num_pruned_ffn"), "conv": ("channels_removed", "num_pruned_conv"),
           "layers": ("layers_removed", "num_pruned_layers")}


def _removed(kind: str, before: PruningPlan, after: PruningPlan) -> dict[str, Any]:
    """The report's count and ids of `kind`'s units that `after` adds to `before`."""
    key, count = REMOVED[kind]
    return {key: getattr(after, count) - getattr(before, count),
            KINDS[kind].plan_key: after.to_json().get(KINDS[kind].plan_key, {})}


def _rounds(ctx: Context, target: Target, rounds: int, plan: PruningPlan, report: dict[str, Any]) -> Decision:
    """Heads in `rounds` rounds, re-scored by the ranking's scorer before each (the score file, if any, ranks
    the first); the model is evaluated after each round when there is data."""
    ranking = ctx.ranking("heads")
    if ranking.scorer is None:
        raise InputError(f"--rounds {rounds} re-scores the remaining heads between rounds: give --scorer NAME "
                         "and --data")
    if ctx.dry_run:
        raise InputError("--dry-run only decides the plan (no surgery): drop --recover-epochs and --rounds")
    ws = ctx.workspace(ctx.data.split or "test") if ctx.data is not None else None
    scoring = ctx.scoring(ctx.model)
    drawn = scoring.draw(ranking.samples, ranking.seed, 8)
    report["score_samples"] = drawn.paths
    method = build_scorer(ranking.scorer, ranking.options, task=scoring.task.name, seed=ranking.seed)
    method.progress = ctx.progress
    from ..scorers.parallel import run

    def score_fn(model: torch.nn.Module) -> torch.Tensor:
        return run(method, model, drawn.batches, scoring.task.objective, progress=ctx.progress).scores

    first = ctx.read("heads", ranking.scores) if ranking.scores is not None else None
    measure = (lambda m: ws.evaluate(m, progress=ctx.progress)) if ws is not None else None
    pruned, heads, history = prune_iteratively(ctx.model, score_fn, target, rounds, first_scores=first,
                                               evaluate=measure)
    return Decision(heads.union(plan), report, pruned=pruned, rounds=history, evaluation=ws)


def _auto_cut(ctx: Context, target: Target, amount: Any, plan: PruningPlan, report: dict[str, Any],
              rounds: int) -> Decision:
    """`--scorer auto` up to a cut: the candidate with the best mean metric up to it on the selection split."""
    if rounds > 1:
        raise InputError("--scorer auto picks one ranking for a one-shot cut: drop --rounds")
    selection = ctx.selection(ctx.data.split if ctx.data else None)
    matrix = _choose(ctx, selection, report, dict(ratio=target.ratio, heads=target.heads, scope=target.scope,
                                                  min_heads_per_layer=target.min_heads_per_layer))
    chosen = select_kept("heads", matrix, plan, amount)
    return Decision(chosen, report, ranking=matrix, evaluation=ctx.apart(selection))


def _choose(ctx: Context, selection: Any, report: dict[str, Any], budget: dict[str, Any]) -> torch.Tensor:
    """Score with every candidate of the auto ranking (one draw of samples for all) and keep the one that
    holds the metric best."""
    ranking, tell = ctx.ranking("heads"), _say(ctx)
    rankings = {}
    for name in ranking.candidates:
        if tell:
            tell(f"auto: scoring with {name} on {ranking.samples} samples of {ctx.scoring.split}")
        rankings[name] = ctx.matrix_by("heads", Ranking(name, samples=ranking.samples, seed=ranking.seed))
    choice = choose_scorer(ctx.model, rankings, selection.evaluate, **budget)
    report.update(auto={"chosen": choice.best, "candidates": choice.candidates}, scorer=choice.best)
    if tell:
        tell(f"auto: {choice.best} keeps the metric best on the {selection.split} split")
    return rankings[choice.best]


@decider(AccuracyBudget)
def decide_accuracy(ctx: Context, budget: AccuracyBudget) -> Decision:
    """As many units as the selection metric allows: a bisection of one ranking (heads) or of the removal
    order of several kinds, every probe a gated evaluation."""
    selection = ctx.selection(ctx.data.split if ctx.data else None)
    report: dict[str, Any] = {"scope": budget.scope}
    floors = budget.min_per_layer
    heads = None
    if "heads" in budget.units:
        ranking = ctx.ranking("heads")
        heads = _choose(ctx, selection, report, dict(max_drop=budget.max_drop, scope=budget.scope,
                                                     min_heads_per_layer=floors["heads"])) \
            if ranking.scorer == AUTO else ctx.matrix("heads")
    units = "both" if budget.units == ("heads", "ffn") else ",".join(budget.units)
    if units == "heads":
        search = max_drop_plan(ctx.model, heads, selection.evaluate, budget.max_drop, scope=budget.scope,
                               min_heads_per_layer=floors["heads"], progress=_say(ctx))
    else:
        scores = {kind: heads if kind == "heads" else ctx.matrix(kind) for kind in budget.units}
        order = removal_order(ctx.model, scores, min_per_layer=floors)
        search = max_drop_units_plan(ctx.model, order, selection.evaluate, budget.max_drop, progress=_say(ctx))
        for kind in budget.units:
            if kind != "heads":
                key, count = REMOVED[kind]
                report[kind] = {**source(ctx.ranking(kind)),
                                key: getattr(search.plan, count) - getattr(surgery.plan_of(ctx.model), count)}
    report["max_drop"] = {"budget": budget.max_drop, "units": units, **search.to_json()}
    return Decision(search.plan, report, ranking=heads, evaluation=ctx.apart(selection))


@decider(MacBudget)
def decide_macs(ctx: Context, budget: MacBudget) -> Decision:
    """The cheapest units of every ranked kind (importance rank within its kind per MAC the kind holds) until
    the model has at most `budget.fraction` of the dense model's MACs; the heads must be ranked."""
    scores = {kind: ctx.matrix(kind) for kind in budget.units}
    plan, info = target_macs_plan(ctx.model, scores, budget.fraction, min_per_layer=budget.min_per_layer)
    return Decision(plan, {"target_macs": info}, ranking=scores["heads"])


@decider(LearnedBudget)
def decide_learned(ctx: Context, budget: LearnedBudget) -> Decision:
    """Masks learned with the weights on the train split, distilling from the model as given, under the MAC
    budget; the units whose gates closed go (`prunehead.pruning.learned`)."""
    from ..pruning.learned import MaskLearner, copy_for_training, steps_for
    from ..pruning.learned_run import learn_
    from ..scorers.parallel import fingerprint, model_fingerprint, process_group
    from ..training.distill import DistillTask
    from ..training.engine import deterministic

    if ctx.dry_run:
        raise InputError("--method l0 trains the model to decide: drop --dry-run")
    ws = ctx.workspace("train")
    teacher = ws.model
    student = copy_for_training(teacher).train()
    batch = ctx.data.batch_size
    learner = MaskLearner(student, budget.units, budget.fraction, lr=budget.lr, gate_lr=budget.gate_lr,
                          steps=steps_for(ws.dataset.num_rows, batch, budget.epochs), seed=0)
    task = DistillTask(ws.task, teacher, budget.distill, student)
    key = fingerprint(weights=model_fingerprint(teacher), data=ctx.data.spec, rows=ws.dataset.num_rows, batch=batch,
                      clip_seconds=ctx.data.clip_seconds, target=target_json(budget),
                      multiplier=("pi", *learner.gains)) if ctx.checkpoint else ""
    with process_group(next(teacher.parameters()).device) as (_, world), deterministic(0):
        resumed = learn_(learner, task, ws, batch, budget.epochs, checkpoint=ctx.checkpoint, key=key, tell=_say(ctx),
                         progress=ctx.progress)
    student.eval()
    plan = learner.plan()
    rounded = learner.fold_()
    return Decision(plan, {"l0": {**learner.report(), "rounded_gates": rounded, "distill": budget.distill.to_json(),
                                  "processes": world, "resumed_steps": resumed}}, weights=student)


def _say(ctx: Context) -> Any:
    from ..progress import say

    return say if ctx.progress else None
