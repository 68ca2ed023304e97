"""Every command fails on bad input with one line, exit code 1, no traceback and nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import SEWDConfig, SEWDForSequenceClassification, Wav2Vec2FeatureExtractor
from typer.testing import CliRunner

from prunehead import save_scores
from prunehead.cli import app
from tests.conftest import tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    model = tiny("wav2vec2-tiny", num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    model.save_pretrained(root / "model")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "model")
    sew_d = SEWDForSequenceClassification(SEWDConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                     intermediate_size=64, conv_dim=(32,) * 13, num_labels=2))
    sew_d.save_pretrained(root / "sew-d")  # disentangled attention: no family
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "notes.txt").write_text("hello")
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / "data" / split / label).mkdir(parents=True)
            for i in range(2):
                sf.write(root / "data" / split / label / f"{i}.wav", np.random.default_rng(i).standard_normal(4000)
                         .astype(np.float32) * 0.1, 16000)
    save_scores(root / "scores.json", torch.rand(2, 4), "random", "model")
    (root / "a-file").write_text("a file where a folder would have to be")
    return root


def _commands(root, model, out):
    data = str(root / "data")
    return {
        "prune": ["prune", "-m", model, "-s", str(root / "scores.json"), "--ratio", "0.5", "--out", out],
        "score": ["score", "-m", model, "-d", data, "--scorer", "attention", "--samples", "2", "--out", out],
        "eval": ["eval", "-m", model, "-d", data, "--out", out],
        "export": ["export", "onnx", "--model", model, "--out", out],
        "sweep": ["sweep", "-m", model, "-d", data, "-s", str(root / "scores.json"), "--ratios", "0.5", "--out", out],
    }


def _fails_cleanly(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", ["prune", "score", "eval", "export", "sweep"])
@pytest.mark.parametrize("which", ["missing", "not-a-model"])
def test_bad_model_path(assets, tmp_path, command, which):
    out = tmp_path / "out.json"
    result = runner.invoke(app, _commands(assets, str(assets / which), str(out))[command])
    _fails_cleanly(result, "cannot load a model")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["prune", "score", "export"])
def test_unsupported_architecture_names_the_supported_types(assets, tmp_path, command):
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, _commands(assets, str(assets / "sew-d"), str(out))[command])
    _fails_cleanly(result, "sew-d", "wav2vec2")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["prune", "score", "eval", "export", "sweep"])
def test_unwritable_output_path(assets, command):
    out = str(assets / "a-file" / "out.json")  # its parent is a file
    result = runner.invoke(app, _commands(assets, str(assets / "model"), out)[command])
    _fails_cleanly(result, "cannot write")


@pytest.mark.parametrize("command", ["prune", "score", "eval", "export", "sweep"])
def test_existing_output_is_refused(assets, tmp_path, command):
    out = tmp_path / "exists.json"
    out.write_text("keep me")
    result = runner.invoke(app, _commands(assets, str(assets / "model"), str(out))[command])
    _fails_cleanly(result, "--overwrite")
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["--split", "validation"], "validation"),
    (["--task", "asr"], "text"),
])
def test_data_problems_through_the_cli(assets, args, message):
    result = runner.invoke(app, ["eval", "-m", str(assets / "model"), "-d", str(assets / "data"), *args])
    _fails_cleanly(result, message)


def test_debug_shows_the_traceback(assets, monkeypatch):
    monkeypatch.setenv("PRUNEHEAD_DEBUG", "1")
    result = runner.invoke(app, ["prune", "-m", str(assets / "missing"), "-s", str(assets / "scores.json"),
                                 "--ratio", "0.5", "--out", str(assets / "never")])
    assert result.exit_code != 0 and result.exception is not None and "cannot load" in str(result.exception)


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os

    from prunehead.output_guard import atomic_dir, atomic_file

    with atomic_file(tmp_path / "f.json") as tmp:
        tmp.write_text("{}")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_failed_block_leaves_nothing(tmp_path):
    from prunehead.output_guard import atomic_dir

    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "half").write_text("half-written")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    ({"scores": [[0.1, 0.2, 0.3, 0.4]] * 2}, "not a prunehead score file"),
    ({"format": "prunehead.scores", "version": 1, "num_layers": 2, "num_heads": 4,
      "scores": [[0.1, float("nan"), 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]}, "NaN or inf"),
    ({"format": "prunehead.scores", "version": 1, "num_layers": 2, "num_heads": 4,
      "scores": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4]]}, "L lists of H numbers"),
], ids=["wrong-format", "nan", "ragged"])
def test_bad_score_files_through_prune_and_sweep(assets, tmp_path, content, message):
    import json

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    for argv in (["prune", "-m", str(assets / "model"), "-s", str(bad), "--ratio", "0.5", "--out", str(tmp_path / "o")],
                 ["sweep", "-m", str(assets / "model"), "-d", str(assets / "data"), "-s", str(bad), "--ratios", "0.5",
                  "--out", str(tmp_path / "o")]):
        _fails_cleanly(runner.invoke(app, argv), message)
        assert not (tmp_path / "o").exists()
