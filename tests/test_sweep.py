"""Sweeps: dead heads prune for free, a sweep point equals `prunehead prune --data`, files are written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor
from typer.testing import CliRunner

from prunehead import save_scores
from prunehead.cli import app
from prunehead.plan import PruningPlan
from prunehead.scorers import get_scorer
from prunehead.sweep import parse_ratios, sweep
from prunehead.workspace import open_workspace
from tests.conftest import tiny

runner = CliRunner()
DEAD = {0: (1, 3), 1: (0,)}  # 3 of 8 heads: value rows and out_proj columns all zero


def kill_heads_(model, dead=DEAD, head_dim=8):
    with torch.no_grad():
        for layer, heads in dead.items():
            attention = model.wav2vec2.encoder.layers[layer].attention
            for h in heads:
                cols = slice(h * head_dim, (h + 1) * head_dim)
                attention.v_proj.weight[cols] = 0
                attention.v_proj.bias[cols] = 0
                attention.out_proj.weight[:, cols] = 0
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    for i in range(24):
        label = ["a", "b", "c"][i % 3]
        (root / "data" / "test" / label).mkdir(parents=True, exist_ok=True)
        tone = np.sin(np.arange(8000) * (0.05 + 0.05 * (i % 3))) + 0.3 * rng.standard_normal(8000)
        sf.write(root / "data" / "test" / label / f"{i}.wav", tone.astype(np.float32), 16000)
    model = kill_heads_(tiny("wav2vec2-tiny", num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                             label2id={"a": 0, "b": 1, "c": 2}))
    model.save_pretrained(root / "model")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "model")
    ws = open_workspace(str(root / "model"), str(root / "data"), "test", batch_size=8)
    scores = get_scorer("gradient").score(ws.model, ws.batches(), ws.task.objective)
    save_scores(root / "gradient.json", scores, "gradient", "model")
    save_scores(root / "anti.json", -scores, "anti", "model")
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
