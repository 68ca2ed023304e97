"""Iterative pruning and recovery: one step == one-shot, K steps remove as many heads and re-score the
model pruned so far (checked by re-scoring it independently), recovery keeps the plan and is reported."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from prunehead import Data, head_adapter, load, plan_of, prune_, save_scores, select
from prunehead.cli import app
from prunehead.pruning.iterative import Target, prune_iteratively, step_share
from prunehead.pruning.plan import PruningPlan
from prunehead.scorers import get_scorer
from prunehead.workspace import open_workspace
from tests.conftest import dead_head_workspace

runner = CliRunner()
LABELS = ("a", "b", "c")


def _plan(pruned_heads: dict) -> PruningPlan:
    return PruningPlan.from_json({"format": "prunehead.plan", "num_layers": 2, "num_heads": 4,
                                  "pruned_heads": pruned_heads})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 2 x 4 wav2vec2 with 3 dead heads, a learnable 3-tone data set (train + test), gradient scores."""
    root = tmp_path_factory.mktemp("iterative")
    ws, scores = dead_head_workspace(root, {"train": 24, "test": 12}, "train")
    return root, ws, scores


def _gradient(ws):
    return lambda model: get_scorer("gradient").score(model, ws.batches(), ws.task.objective)


def test_step_shares_are_cumulative_and_end_at_the_target():
    assert [step_share(6, i, 3) for i in range(4)] == [0, 2, 4, 6]
    assert [step_share(2, i, 5) for i in range(1, 6)] == [0, 1, 1, 2, 2]  # 0.4, 0.8, 1.2, 1.6, 2.0 rounded
    assert Target(ratio=0.75).at_round(1, 3, 2, 4) == Target(ratio=2 / 8)
    assert Target(heads=3, scope="per_layer").at_round(2, 3, 2, 4) == Target(ratio=2 / 4, scope="per_layer")


@pytest.mark.parametrize("target", [Target(ratio=0.75), Target(ratio=0.5), Target(heads=2, scope="per_layer"),
                                    Target(ratio=1.0, scope="per_layer", min_heads_per_layer=1)])
def test_one_step_is_one_shot_and_k_steps_remove_as_many_heads(setup, target):
    _, ws, scores = setup
    one_shot = select(scores, **dataclasses.asdict(target))
    _, plan, history = prune_iteratively(ws.model, _gradient(ws), target, 1)
    assert plan == one_shot and history[0]["pruned_heads"] == one_shot.to_json()["pruned_heads"]
    for steps in (2, 3):
        _, plan, history = prune_iteratively(ws.model, _gradient(ws), target, steps)
        assert plan.num_pruned == one_shot.num_pruned and len(history) == steps
        assert history[-1]["heads_removed_total"] == one_shot.num_pruned
        assert sum(h["heads_removed"] for h in history) == one_shot.num_pruned
    assert plan_of(ws.model).num_pruned == 0  # the input model is not changed


def test_every_step_rescores_the_model_pruned_so_far(setup):
    """Re-score each intermediate model independently: the next step removes its lowest heads."""
    _, ws, scores = setup
    seen = []

    def spy(model):
        seen.append(plan_of(model))
        return _gradient(ws)(model)

    _, plan, history = prune_iteratively(ws.model, spy, Target(ratio=0.75), 3)
    assert [h["heads_removed_total"] for h in history] == [2, 4, 6]
    assert seen[0].num_pruned == 0 and [p.to_json()["pruned_heads"] for p in seen[1:]] == \
        [h["pruned_heads"] for h in history[:-1]]
    assert set(history[0]["pruned_heads"]["0"]) == {1, 3}  # step 1: two of the dead heads (all score 0)
    for before, step in zip(history, history[1:]):
        model = prune_(copy.deepcopy(ws.model), _plan(before["pruned_heads"]))
        fresh = _gradient(ws)(model)  # independent of prune_iteratively
        torch.testing.assert_close(torch.tensor(step["scores"], dtype=fresh.dtype), fresh)
        removed = _plan(step["pruned_heads"]).keep_mask() == 0
        added = removed & (_plan(before["pruned_heads"]).keep_mask() == 1)
        assert added.sum() == 2 and fresh[added].max() <= fresh[~removed].min()
    assert not torch.allclose(torch.tensor(history[2]["scores"]), scores.float())  # the ranking was redone


def test_steps_with_nothing_to_remove_are_recorded_but_not_scored(setup):
    _, ws, scores = setup
    calls = []
    _, plan, history = prune_iteratively(ws.model, lambda m: calls.append(m) or _gradient(ws)(m),
                                         Target(heads=1, scope="per_layer"), 3, first_scores=-scores,
                                         evaluate=lambda m: {"calls": float(len(calls))})
    assert [h["heads_removed_total"] for h in history] == [0, 2, 2] and not calls  # 1/3 and 2/3 of a head
    assert [h["scored_by"] for h in history] == [None, "scores", None]  # the file drives the first removal
    assert plan == select(-scores, heads=1, scope="per_layer")
    assert [h["metrics"] for h in history] == [{"calls": 0.0}] * 3


@pytest.mark.parametrize("scorer", [["--scorer", "gradient"], ["--scorer", "attention", "--option", "variant=entropy"]])
def test_cli_one_step_with_a_scorer_equals_score_then_prune(setup, tmp_path, scorer):
    root, _, _ = setup
    model, data = str(root / "model"), str(root / "data")
    result = runner.invoke(app, ["score", "-m", model, "-d", data, *scorer, "--samples", "12",
                                 "--out", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    common = ["prune", "-m", model, "-d", data, "--ratio", "0.75", "--batch-size", "8"]
    result = runner.invoke(app, [*common, "-s", str(tmp_path / "scores.json"), "--out", str(tmp_path / "once")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*common, *scorer, "--samples", "12", "--out", str(tmp_path / "here")])
    assert result.exit_code == 0, result.output
    once, here = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("once", "here"))
    assert once["pruned_heads"] == here["pruned_heads"] and once["heads_removed"] == 6
    assert once["metrics_after"] == here["metrics_after"] == here["rounds"][0]["metrics"]


def test_prune_passes_scorer_options_through(setup, tmp_path):
    """--option reaches the scorer: each random seed's plan is the one its own scores select."""
    root, ws, _ = setup
    common = ["prune", "-m", str(root / "model"), "-d", str(root / "data"), "--ratio", "0.5", "--batch-size", "8",
              "--samples", "12", "--dry-run"]
    plans = []
    for seed in (1, 2):
        result = runner.invoke(app, [*common, "--scorer", "random", "--option", f"seed={seed}",
                                     "--out", str(tmp_path / str(seed))])
        assert result.exit_code == 0, result.output
        plans.append(json.loads((tmp_path / str(seed) / "plan.json").read_text())["pruned_heads"])
        expected = select(get_scorer("random", seed=seed).score(ws.model, [], None), ratio=0.5, scope="global")
        assert plans[-1] == expected.to_json()["pruned_heads"]
    assert plans[0] != plans[1]
    result = runner.invoke(app, [*common, "--scorer", "attention", "--option", "variant=nope",
                                 "--out", str(tmp_path / "bad")])
    assert result.exit_code == 1 and "unknown attention variant" in result.output


def test_cli_prunes_in_steps_from_a_first_score_file(setup, tmp_path):
    """--scores drives step 1 (anti-scores: live heads first), --scorer the later steps; all recorded."""
    root, ws, scores = setup
    out = tmp_path / "steps"
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), "-d", str(root / "data"), "--ratio", "0.75",
                                 "--rounds", "3", "-s", str(root / "anti.json"), "--scorer", "gradient",
                                 "--samples", "24", "--batch-size", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    steps = report["rounds"]
    assert [s["heads_removed_total"] for s in steps] == [2, 4, 6] and report["heads_removed"] == 6
    assert [s["scored_by"] for s in steps] == ["scores", "scorer", "scorer"]
    assert select(-scores, ratio=0.25).to_json()["pruned_heads"] == steps[0]["pruned_heads"]
    assert all(set(s["metrics"]) >= {"accuracy", "loss"} for s in steps)
    assert report["metrics_after"] == steps[-1]["metrics"] and report["recovered"] is False
    assert json.loads((out / "plan.json").read_text())["pruned_heads"] == steps[-1]["pruned_heads"]
    model = load(out)
    assert plan_of(model).to_json()["pruned_heads"] == report["pruned_heads"] == steps[-1]["pruned_heads"]
    fresh = _gradient(ws)(prune_(copy.deepcopy(ws.model), _plan(steps[0]["pruned_heads"])))  # all 24 train clips
    torch.testing.assert_close(torch.tensor(steps[1]["scores"], dtype=fresh.dtype), fresh)


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    """The tone task learned for 6 epochs (loss ~0.07, not yet converged) and its anti-gradient scores."""
    from prunehead.training.finetune import TrainConfig, finetune

    root, _, _ = setup
    path = tmp_path_factory.mktemp("trained") / "model"
    finetune("arch:wav2vec2-tiny", str(root / "data"), path, TrainConfig(epochs=6, lr=3e-3, head_lr=3e-3, batch_size=8,
             freeze_feature_encoder=False, eval_split=None), progress=False)
    ws = open_workspace(str(path), str(root / "data"), "train", batch_size=8)
    save_scores(path.parent / "anti.json", -_gradient(ws)(ws.model), "anti", str(path))
    return path


def test_recovery_keeps_the_plan_lowers_the_loss_and_saves_the_recovered_model(setup, trained, tmp_path):
    """Pruned in 2 steps (the most important heads first), then 2 epochs of recovery on the train split."""
    from prunehead import evaluate

    root, _, _ = setup
    out = tmp_path / "recovered"
    result = runner.invoke(app, ["prune", "-m", str(trained), "-s", str(trained.parent / "anti.json"), "--heads", "2",
                                 "--rounds", "2", "--scorer", "gradient", "-d", str(root / "data"), "--batch-size", "8",
                                 "--recover-epochs", "2", "--recover-lr", "2e-3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["recovered"] is True and report["recovery"]["epochs"] == 2
    after, recovered = report["metrics_after"]["loss"], report["metrics_after_recovery"]["loss"]
    assert recovered < 0.5 * after, (after, recovered)
    assert [len(h) for h in report["pruned_heads"].values()] == [2, 2]
    assert report["pruned_heads"] == report["rounds"][-1]["pruned_heads"]
    model = load(out)
    assert plan_of(model).to_json()["pruned_heads"] == report["pruned_heads"]
    assert head_adapter(model).heads_per_layer(model) == [2, 2]
    saved = evaluate(str(out), Data(str(root / "data"), batch_size=8))
    assert saved["loss"] == pytest.approx(recovered, abs=1e-6)  # --out holds the recovered model


@pytest.mark.parametrize("extra, message", [
    (["-s", "{scores}", "--rounds", "2", "-d", "{data}"], "give --scorer"),
    (["--rounds", "2", "--scorer", "gradient"], "give --data"),
    (["-s", "{scores}", "--recover-epochs", "1"], "give --data"),
    ([], "give --scores FILE"),
    (["-s", "{scores}", "--scorer", "gradient", "-d", "{data}"], "drop one"),
    (["--scorer", "nope", "-d", "{data}"], "unknown scorer"),
    (["--rounds", "2", "--scorer", "gradient", "-d", "{data}", "--heads", "2", "--global"], "--per-layer"),
])
def test_bad_combinations_fail_in_one_line_and_write_nothing(setup, tmp_path, extra, message):
    root, _, _ = setup
    out = tmp_path / "out"
    paths = {"scores": str(root / "gradient.json"), "data": str(root / "data")}
    args = [a.format(**paths) for a in extra]
    ratio = [] if "--heads" in args else ["--ratio", "0.5"]
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), *ratio, *args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output, result.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
