"""Sweeps: dead heads prune for free, a sweep point equals `prunehead prune --data`, files are written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prunehead.cli import app
from prunehead.pruning.plan import PruningPlan
from prunehead.experiments.curves import parse_ratios, run_sweep as sweep
from tests.conftest import DEAD, dead_head_workspace

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    ws, scores = dead_head_workspace(root, {"test": 24}, "test")
    return root, ws, scores


def test_gradient_ranks_dead_heads_last_and_removing_them_changes_nothing(setup):
    _, ws, scores = setup
    dead_mask = PruningPlan(2, 4, DEAD).keep_mask() == 0
    assert (scores[dead_mask] == 0).all() and (scores[~dead_mask] > 0).all()
    result = sweep(ws.model, ws.evaluate, {"gradient": scores}, metric="loss", ratios=[0.0, 0.125, 0.25, 0.375, 0.5],
                   random_seeds=())
    losses = [p["loss"] for p in result["curves"]["gradient"]]
    assert losses[:4] == [result["unpruned"]["loss"]] * 4  # flat (bit-identical) up to the dead fraction 3/8
    assert losses[4] != losses[0]


def test_sweep_point_equals_prune_with_data(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", "-m", str(root / "model"), "-d", str(root / "data"), "--out", str(out),
                                 "--scores", str(root / "gradient.json"), str(root / "anti.json"),
                                 "--ratios", "0,0.5", "--metric", "loss", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    curve = json.loads((out / "curve.json").read_text())
    assert set(curve["curves"]) == {"gradient", "anti", "random"}
    assert [p["x"] for p in curve["curves"]["anti"]] == [0.0, 0.5]
    assert len(curve["curves"]["random"]) == 2 and "std" in curve["curves"]["random"][0]
    assert (out / "curve.png").stat().st_size > 1000 and "| ratio |" in (out / "curve.md").read_text()
    pruned = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), "-s", str(root / "anti.json"), "--ratio", "0.5",
                                 "--global", "--data", str(root / "data"), "--out", str(pruned), "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    report = json.loads((pruned / "report.json").read_text())
    point = curve["curves"]["anti"][1]
    assert point["heads_removed"] == report["heads_removed"] == 4
    assert report["metrics_after"]["loss"] == pytest.approx(point["loss"], abs=1e-6)
    assert report["metrics_before"]["loss"] == pytest.approx(curve["unpruned"]["loss"], abs=1e-6)


def test_per_layer_sweep_goes_over_heads_per_layer(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "per-layer"
    result = runner.invoke(app, ["sweep", "-m", str(root / "model"), "-d", str(root / "data"), "--out", str(out),
                                 "-s", str(root / "gradient.json"), "--per-layer", "--metric", "loss"])
    assert result.exit_code == 0, result.output
    curve = json.loads((out / "curve.json").read_text())
    assert [p["x"] for p in curve["curves"]["gradient"]] == [0, 1, 2, 3]
    assert [p["heads_removed"] for p in curve["curves"]["gradient"]] == [0, 2, 4, 6]


def test_parse_ratios():
    assert parse_ratios("0:0.9:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert parse_ratios("0.2,0.4") == [0.2, 0.4]
    with pytest.raises(Exception, match="within"):
        parse_ratios("0:2:1")
