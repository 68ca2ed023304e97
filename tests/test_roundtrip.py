"""Round trip: every folder a command writes re-evaluates to exactly the metric the command reported.

Models with 2, 10, 12 and 35 classes whose names sort differently from their ids (id 0 is the last name
alphabetically), so that neither a config.json written with string-sorted keys ("0", "1", "10", "11", "2",
...) nor a label list read by position can go unnoticed: every comparison includes the loss, which any
permutation of the classes changes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor

import prunehead
from prunehead.scorers import get_scorer
from prunehead.workspace import open_workspace
from tests.conftest import run_main, same_metrics, tiny

CLASS_COUNTS = (2, 10, 12, 35)
RATE = 16000


def class_names(k: int) -> list[str]:
    """Names whose alphabetical order is the reverse of their ids."""
    return [f"w{k - 1 - i:02d}" for i in range(k)]


def write_data(root, names: list[str], per_class: dict[str, int]) -> None:
    """An audiofolder of noisy tones, one pitch per class."""
    rng = np.random.default_rng(len(names))
    for split, n in per_class.items():
        for c, name in enumerate(names):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                t = np.arange(RATE // 4)
                wave = np.sin(t * (0.02 + 0.01 * c)) + 0.3 * rng.standard_normal(len(t))
                sf.write(root / split / name / f"{i}.wav", wave.astype(np.float32), RATE)


@pytest.fixture(scope="module", params=CLASS_COUNTS, ids=lambda k: f"{k}-classes")
def saved(request, tmp_path_factory):
    """(root, class count): a saved wav2vec2-tiny of K classes, its data and a score file."""
    k = request.param
    root = tmp_path_factory.mktemp(f"roundtrip{k}")
    names = class_names(k)
    write_data(root / "data", names, {"train": 2, "test": 1})
    model = tiny("wav2vec2-tiny", num_labels=k, id2label=dict(enumerate(names)),
                 label2id={n: i for i, n in enumerate(names)}, seed=k)
    model.save_pretrained(root / "model")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "model")
    prunehead.save_scores(root / "scores.json", torch.arange(8.0).reshape(2, 4), "fixed", str(root / "model"))
    return root, k


def cli(*args) -> str:
    code, out, err = run_main(*args)
    assert code == 0, out + err
    return out


def evaluated(model, data, split: str = "test") -> dict:
    """A fresh `prunehead eval`, through the CLI, of what a command wrote."""
    out = model.parent / f"{model.name}-eval.json"
    cli("eval", "--model", model, "--data", data, "--split", split, "--out", out, "--overwrite")
    return {k: v for k, v in json.loads(out.read_text()).items() if k not in ("model", "data", "split")}


def without_epoch(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "epoch"}


def test_a_pruned_folder_evaluates_to_the_reported_metric(saved):
    root, _ = saved
    cli("prune", "-m", root / "model", "-s", root / "scores.json", "--ratio", 0.25, "--global",
        "-d", root / "data", "--out", root / "pruned", "--overwrite")
    report = json.loads((root / "pruned" / "report.json").read_text())
    assert report["data"]["split"] == "test"
    assert same_metrics(evaluated(root / "pruned", root / "data"), report["metrics_after"])
    assert same_metrics(evaluated(root / "model", root / "data"), report["metrics_before"])
    ids = json.loads((root / "pruned" / "config.json").read_text())["id2label"]
    assert list(ids) == [str(i) for i in range(len(ids))]  # written in id order, never string-sorted


def test_score_on_a_pruned_folder_uses_its_own_labels(saved):
    root, k = saved
    cli("prune", "-m", root / "model", "-s", root / "scores.json", "--ratio", 0.25, "-d", root / "data",
        "--out", root / "pruned-s", "--overwrite")
    cli("score", "-m", root / "pruned-s", "-d", root / "data", "--split", "test", "--scorer", "gradient",
        "--out", root / "pruned-s.json", "--overwrite")
    written = prunehead.load_scores(root / "pruned-s.json")
    # independently: the model built in code (ids as given, no config.json read), pruned by the same plan
    model = tiny("wav2vec2-tiny", num_labels=k, id2label=dict(enumerate(class_names(k))), seed=k)
    model.load_state_dict(prunehead.load(root / "model").state_dict())
    prunehead.prune_(model, prunehead.plan_of(prunehead.load(root / "pruned-s")))
    ws = open_workspace(model, str(root / "data"), "test", source=str(root / "model"))
    assert [class_names(k)[int(i)] for i in ws.dataset["label"]] == [p.split("/")[-2] for p in ws.dataset["path"]]
    expected = get_scorer("gradient").score(ws.model, ws.batches(), ws.task.objective)
    torch.testing.assert_close(written.nan_to_num(-1), expected.nan_to_num(-1))


def test_finetune_on_a_pruned_folder_round_trips(saved):
    root, _ = saved
    cli("prune", "-m", root / "model", "-s", root / "scores.json", "--ratio", 0.25, "--out", root / "pruned-f",
        "--overwrite")
    cli("finetune", "-m", root / "pruned-f", "-d", root / "data", "--epochs", 1, "--batch-size", 4,
        "--out", root / "tuned")
    record = json.loads((root / "tuned" / "train.json").read_text())
    assert prunehead.plan_of(prunehead.load(root / "tuned")) == prunehead.plan_of(prunehead.load(root / "pruned-f"))
    assert same_metrics(evaluated(root / "tuned", root / "data"), without_epoch(record["final"]))


def test_finetune_from_scratch_round_trips(saved):
    root, k = saved
    cli("finetune", "-m", "arch:wav2vec2-tiny", "-d", root / "data", "--epochs", 1, "--batch-size", 8,
        "--out", root / "scratch")
    record = json.loads((root / "scratch" / "train.json").read_text())
    assert same_metrics(evaluated(root / "scratch", root / "data"), without_epoch(record["final"]))


def test_recovery_round_trips(saved):
    root, _ = saved
    cli("prune", "-m", root / "model", "-s", root / "scores.json", "--ratio", 0.25, "-d", root / "data",
        "--recover-epochs", 1, "--batch-size", 4, "--out", root / "recovered", "--overwrite")
    report = json.loads((root / "recovered" / "report.json").read_text())
    assert same_metrics(evaluated(root / "recovered", root / "data"), report["metrics_after_recovery"])


def test_an_export_folder_evaluates_to_the_reported_metric(saved):
    root, _ = saved
    cli("prune", "-m", root / "model", "-s", root / "scores.json", "--ratio", 0.25, "--out", root / "pruned-x",
        "--overwrite")
    cli("export", "onnx", "-m", root / "pruned-x", "--data", root / "data", "--repeats", 1,
        "--out", root / "onnx", "--overwrite")
    summary = json.loads((root / "onnx" / "export.json").read_text())
    reported = summary["checks"]["data"]["metrics"]
    assert same_metrics(evaluated(root / "onnx", root / "data"), reported["export"])
    assert evaluated(root / "pruned-x", root / "data")["accuracy"] == reported["pytorch"]["accuracy"]
