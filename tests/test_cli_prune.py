"""`prunehead prune` end to end through the CLI, and the real Whisper tiny.en."""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor
from typer.testing import CliRunner

from prunehead import head_adapter, load, save_scores
from prunehead.cli import app
from tests.conftest import run_main, tiny

runner = CliRunner()


@pytest.fixture
def saved_model(tmp_path):
    model = tiny("wav2vec2-12x12", num_labels=3, hidden_size=48, intermediate_size=96, conv_dim=(16,) * 7)
    path = tmp_path / "model"
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    scores = tmp_path / "scores.json"
    save_scores(scores, torch.randn(12, 12, generator=torch.Generator().manual_seed(0)), "random", str(path))
    return path, scores


def test_prune_global_ratio_writes_a_loadable_model(saved_model, tmp_path):
    path, scores = saved_model
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "--model", str(path), "--scores", str(scores), "--ratio", "0.4",
                                 "--global", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = load(out)
    removed = 144 - sum(head_adapter(model).heads_per_layer(model))
    assert removed == math.floor(0.4 * 144) == 57
    report = json.loads((out / "report.json").read_text())
    assert report["heads_removed"] == 57 and report["after"]["params"] < report["before"]["params"]
    assert report["after"]["macs"] < report["before"]["macs"]
    assert (out / "preprocessor_config.json").exists() and (out / "plan.json").exists()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 16000)).logits).all()


def test_dry_run_writes_only_the_plan(saved_model, tmp_path):
    path, scores = saved_model
    out = tmp_path / "plan-only"
    result = runner.invoke(app, ["prune", "-m", str(path), "-s", str(scores), "--heads", "3", "--out", str(out),
                                 "--dry-run"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]
    plan = json.loads((out / "plan.json").read_text())
    assert all(len(h) == 3 for h in plan["pruned_heads"].values()) and len(plan["pruned_heads"]) == 12


def test_out_of_range_options_fail_while_parsing_in_one_line(saved_model, tmp_path):
    path, scores = saved_model
    code, out, err = run_main("prune", "-m", path, "-s", scores, "--out", tmp_path / "out", "--ratio", "1.2")
    assert code == 2 and out == "" and not (tmp_path / "out").exists()
    assert err.count("\n") == 1 and err.startswith("error: ") and "'--ratio'" in err and "1" in err


@pytest.mark.parametrize("extra, message", [
    (["--ratio", "0.2", "--heads", "2"], "exactly one"),
    ([], "exactly one"),
    (["--heads", "12"], "--heads must be within"),
])
def test_bad_options_fail_in_one_line_and_write_nothing(saved_model, tmp_path, extra, message):
    path, scores = saved_model
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", "-m", str(path), "-s", str(scores), "--out", str(out), *extra])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_existing_output_is_refused_without_overwrite(saved_model, tmp_path):
    path, scores = saved_model
    out = tmp_path / "exists"
    out.mkdir()
    result = runner.invoke(app, ["prune", "-m", str(path), "-s", str(scores), "--ratio", "0.1", "--out", str(out)])
    assert result.exit_code == 1 and "--overwrite" in result.output


def test_wrong_shape_scores_and_missing_model(saved_model, tmp_path):
    path, _ = saved_model
    bad = tmp_path / "bad.json"
    save_scores(bad, torch.zeros(4, 6), "random", "x")
    result = runner.invoke(app, ["prune", "-m", str(path), "-s", str(bad), "--ratio", "0.1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "4 x 6" in result.output
    result = runner.invoke(app, ["prune", "-m", str(tmp_path / "nope"), "-s", str(bad), "--ratio", "0.1",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "cannot load a model" in result.output


def test_real_whisper_tiny_prunes_reloads_and_transcribes(shared, tmp_path):
    """40 % of the real encoder's heads go; the reloaded model equals the gated original and the ASR
    pipeline still runs (what it says depends on the scores: random ones remove critical heads)."""
    from transformers import AutoProcessor, pipeline

    from prunehead import controlled, plan_of

    source = shared / "models" / "whisper-tiny.en"
    scores = tmp_path / "scores.json"
    save_scores(scores, torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), "random", str(source))
    out = tmp_path / "whisper-pruned"
    result = runner.invoke(app, ["prune", "-m", str(source), "-s", str(scores), "--ratio", "0.4", "--global",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, original = load(out), load(source)
    assert sum(head_adapter(model).heads_per_layer(model)) == 24 - math.floor(0.4 * 24)
    assert [len(layer.self_attn.q_proj.weight) for layer in model.model.decoder.layers] == [384] * 4
    processor = AutoProcessor.from_pretrained(out)
    audio, rate = sf.read(shared / "data" / "libri-1088-134315-0000.wav", dtype="float32")
    clip = {"raw": audio[: rate * 8], "sampling_rate": rate}
    features = processor.feature_extractor(clip["raw"], sampling_rate=rate, return_tensors="pt").input_features
    with torch.no_grad(), controlled(original) as ctl, ctl.gating(plan_of(model).keep_mask()):
        gated = original.model.encoder(features).last_hidden_state
    with torch.no_grad():
        pruned = model.model.encoder(features).last_hidden_state
    assert (pruned - gated).norm() / gated.norm() < 1e-5
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                   feature_extractor=processor.feature_extractor, device="cpu")
    assert isinstance(asr(dict(clip), generate_kwargs={"max_new_tokens": 32})["text"], str)  # the pipeline consumes the dict it is given
    asr.model = original  # the same pipeline with the unpruned model: the reference transcript
    assert "greatest admiration" in asr(dict(clip), generate_kwargs={"max_new_tokens": 32})["text"]
