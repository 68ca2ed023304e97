"""Fine-tuning, evaluation through the CLI, the Whisper window crop and recipes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from scipy.signal import resample_poly
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor, WhisperForAudioClassification
from typer.testing import CliRunner

from prunehead import PruningPlan, load, plan_of, prune_
from prunehead.cli import app
from prunehead.data import DIGITS, KS_LABELS, load_data
from prunehead.errors import InputError
from prunehead.recipe import load_recipe
from prunehead.surgery import save_pretrained
from prunehead.training.finetune import TrainConfig, finetune
from prunehead.families.whisper_window import crop_window_, window_feature_extractor
from tests.conftest import tiny

runner = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def cli(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def write_tones(root: Path, freqs: dict[str, float], n: int, seconds: float = 0.25) -> None:
    """`root/{train,test}/<label>/*.wav`: noisy tones, one frequency per label (learnable in seconds)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", max(1, n // 2))):
        for label, freq in freqs.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                t = np.arange(int(16000 * seconds)) / 16000
                wave = 0.5 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(len(t))
                sf.write(root / split / label / f"{i}.wav", wave.astype(np.float32), 16000)


def hand_accuracy(model: torch.nn.Module, fe, files: list[Path], labels: list[str]) -> float:
    """Independent loop: soundfile, scipy resampling to 16 kHz, feature extractor, argmax; one file at a time."""
    correct = 0
    for path, label in zip(files, labels):
        wave, rate = sf.read(path, dtype="float32")
        wave = resample_poly(wave, 16000 // np.gcd(rate, 16000), rate // np.gcd(rate, 16000)) if rate != 16000 else wave
        with torch.no_grad():
            logits = model(**fe(wave, sampling_rate=16000, return_tensors="pt")).logits
        correct += model.config.id2label[int(logits.argmax(-1))] == label
    return correct / len(files)


# ----------------------------------------------------------------------------------------------- eval

def test_eval_on_fsdd_reproduces_a_hand_written_loop(shared, tmp_path):
    src = sorted((shared / "data" / "fsdd" / "recordings").glob("*_[0-1].wav"))[::10]  # 8 kHz, test takes
    data = tmp_path / "fsdd"
    data.mkdir()
    for f in src:
        shutil.copy(f, data)
    names = list(reversed(DIGITS))  # the model's class order differs from the data's
    model = tiny("wav2vec2-tiny", num_labels=10, id2label=dict(enumerate(names)), seed=3)
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    model.save_pretrained(tmp_path / "m")
    fe.save_pretrained(tmp_path / "m")
    out = cli("eval", "--model", tmp_path / "m", "--data", f"fsdd-ks:{data}", "--batch-size", 4,
              "--out", tmp_path / "metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = hand_accuracy(model, fe, src, [DIGITS[int(f.name[0])] for f in src])
    assert metrics["samples"] == len(src) and f"samples: {len(src)}" in out
    assert metrics["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_eval_on_speech_commands_with_a_whisper_window(shared, tmp_path):
    root = shared / "data" / "speech-commands-v0.01-300"
    files = [root / p for p in (root / "testing_list.txt").read_text().split() if (root / p).exists()]
    labels = [f.parent.name if f.parent.name in KS_LABELS else "_unknown_" for f in files]
    model = tiny("whisper-encoder-tiny", num_labels=12, id2label=dict(enumerate(KS_LABELS)), seed=1)
    model.save_pretrained(tmp_path / "w")
    fe = WhisperFeatureExtractor(chunk_length=1)  # max_source_positions 50 = 1 s
    fe.save_pretrained(tmp_path / "w")
    cli("eval", "--model", tmp_path / "w", "--data", "speech-commands", "--out", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["samples"] == len(files)
    assert metrics["accuracy"] == pytest.approx(hand_accuracy(model, fe, files, labels), abs=1e-9)


def test_eval_bad_input_is_one_line(tmp_path):
    result = runner.invoke(app, ["eval", "--model", str(tmp_path / "none"), "--data", "fsdd-ks"])
    assert result.exit_code == 1 and "error: cannot load a model" in result.output


# ----------------------------------------------------------------------------------------------- finetune

def test_synth_finetune_eval_end_to_end_under_a_minute(tmp_path):
    start = time.monotonic()
    cli("data", "synth", "ks", "--out", tmp_path / "d", "--n-per-class", 3)
    cli("finetune", "--model", "arch:wav2vec2-tiny", "--data", tmp_path / "d", "--out", tmp_path / "m",
        "--epochs", 1, "--batch-size", 6, "--lr", "1e-3")
    out = cli("eval", "--model", tmp_path / "m", "--data", tmp_path / "d", "--out", tmp_path / "e.json")
    assert time.monotonic() - start < 60
    record = json.loads((tmp_path / "m" / "train.json").read_text())
    metrics = json.loads((tmp_path / "e.json").read_text())
    n_test = len(list((tmp_path / "d" / "test").rglob("*.wav")))
    assert metrics["samples"] == record["final"]["samples"] == n_test == 12
    assert metrics["accuracy"] == pytest.approx(record["final"]["accuracy"])
    assert record["epochs"] == 1 and record["device"] == "cpu" and record["wall_seconds"] > 0
    assert f"accuracy: {metrics['accuracy']:.4f}" in out
    assert sorted(load(tmp_path / "m").config.id2label.values()) == sorted(KS_LABELS)


def test_finetune_learns_and_resumes_exactly(tmp_path):
    write_tones(tmp_path / "d", {"low": 300.0, "high": 2500.0}, n=8)
    cfg = TrainConfig(epochs=4, batch_size=4, lr=5e-3, head_lr=5e-3, warmup=0.0, freeze_feature_encoder=False)
    full = finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "full", cfg, progress=False)
    assert full["final"]["accuracy"] == 1.0 and full["history"][0]["loss"] > full["final"]["loss"]
    with pytest.warns(UserWarning, match="pass --resume"):
        part = finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "part",
                        TrainConfig(**{**cfg.__dict__, "max_seconds": 0.0}), progress=False)
    assert part["stopped_early"] and part["epochs"] == 0
    with pytest.raises(InputError, match="pass --resume"):
        finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "part", cfg, progress=False)
    finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "part", cfg, resume=True, progress=False)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_the_trained_clip_length_is_saved_and_reused(tmp_path):
    """A model fine-tuned with --clip-seconds is evaluated on clips cropped/padded the same way by default."""
    write_tones(tmp_path / "d", {"low": 300.0, "high": 2500.0}, n=2, seconds=0.25)
    cfg = TrainConfig(epochs=1, batch_size=2, clip_seconds=0.5, freeze_feature_encoder=False)
    finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "m", cfg, progress=False)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "m")
    assert set(load_data(str(tmp_path / "d"), "test", fe)["length"][:].tolist()) == {8000}  # 0.25 s padded to 0.5 s
    assert set(load_data(str(tmp_path / "d"), "test", fe, clip_seconds=0.1)["length"][:].tolist()) == {1600}
    assert set(load_data(str(tmp_path / "d"), "test")["length"][:].tolist()) == {4000}  # no model: as recorded
    cli("eval", "--model", tmp_path / "m", "--data", tmp_path / "d", "--out", tmp_path / "default.json")
    cli("eval", "--model", tmp_path / "m", "--data", tmp_path / "d", "--clip-seconds", 0.5,
        "--out", tmp_path / "explicit.json")
    cli("eval", "--model", tmp_path / "m", "--data", tmp_path / "d", "--clip-seconds", 0.25,
        "--out", tmp_path / "unpadded.json")
    default, explicit, unpadded = (json.loads((tmp_path / f"{n}.json").read_text())
                                   for n in ("default", "explicit", "unpadded"))
    assert default["loss"] == explicit["loss"] != unpadded["loss"]


def test_finetune_keeps_the_pruning_plan(tmp_path):
    write_tones(tmp_path / "d", {"a": 400.0, "b": 1200.0}, n=2)
    model = tiny("wav2vec2-tiny", num_labels=2, id2label={0: "a", 1: "b"})
    plan = PruningPlan(2, 4, {0: (1,), 1: (0, 2)})
    prune_(model, plan)
    save_pretrained(model, tmp_path / "pruned")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path / "pruned")
    cli("finetune", "--model", tmp_path / "pruned", "--data", tmp_path / "d", "--out", tmp_path / "tuned",
        "--epochs", 1, "--eval-split", "none")
    tuned = load(tmp_path / "tuned")
    assert plan_of(tuned) == plan
    before = load_file(tmp_path / "pruned" / "model.safetensors")["classifier.weight"]
    assert not torch.equal(tuned.classifier.weight, before)


# ----------------------------------------------------------------------------------------------- whisper

def test_whisper_window_crop_saves_and_reloads(shared, tmp_path):
    path = shared / "models" / "whisper-tiny.en"
    model = WhisperForAudioClassification.from_pretrained(path, num_labels=3, dtype=torch.float32)
    table = model.encoder.embed_positions.weight.detach().clone()  # (1500, 384)
    crop_window_(model, 2.0)
    assert model.config.max_source_positions == 100
    torch.testing.assert_close(model.encoder.embed_positions.weight, table[:100])
    fe = window_feature_extractor(WhisperFeatureExtractor.from_pretrained(path), 2.0)
    assert (fe.n_samples, fe.nb_max_frames) == (32000, 200)
    model.save_pretrained(tmp_path / "w")
    fe.save_pretrained(tmp_path / "w")
    again = WhisperForAudioClassification.from_pretrained(tmp_path / "w")
    features = WhisperFeatureExtractor.from_pretrained(tmp_path / "w")(np.zeros(20000, np.float32),
                                                                        sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(again(**features).logits, model(**features).logits)
    with pytest.raises(InputError, match="whole number of seconds"):
        crop_window_(model, 1.5)


@pytest.mark.slow
def test_whisper_finetune_on_fsdd_subset(shared, tmp_path):
    data = tmp_path / "fsdd"
    data.mkdir()
    for f in sorted((shared / "data" / "fsdd" / "recordings").glob("[01]_*_[0-9].wav")):
        shutil.copy(f, data)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-4, window_s=1.0)
    record = finetune(str(shared / "models" / "whisper-tiny.en"), f"fsdd-ks:{data}", tmp_path / "m", cfg,
                      progress=False)
    assert record["final"]["samples"] == 60 and record["final"]["accuracy"] >= 0.9
    assert load(tmp_path / "m").config.max_source_positions == 50


# ----------------------------------------------------------------------------------------------- recipes

def test_shipped_recipes_load_with_the_papers_hib_settings():
    table1 = {"asr": (10.0, 100), "sid": (0.1, 200), "ks": (1.0, 200), "ic": (1.0, 100)}
    names = sorted(p.stem for p in RECIPES.glob("*.toml"))
    assert {"whisper-tiny-fsdd-ks", "whisper-tiny-fsdd-sid", "w2v2-12x12-ks", "w2v2-12x12-asr"} <= set(names)
    for name in names:
        recipe = load_recipe(RECIPES / f"{name}.toml")
        assert (recipe.score.beta, recipe.score.steps) == table1[recipe.task], name
        assert (recipe.score.noise, recipe.score.lr, recipe.score.samples) == (0.9, 0.1, 200)


def test_recipe_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text('version = 2\ntask = "ks"\n[model]\npath = "arch:wav2vec2-tiny"\n[data]\nspec = "x"\n'
                   '[train]\nepoch = 3\n')
    with pytest.raises(InputError, match=r"r.toml \[train\]: unknown key 'epoch'"):
        load_recipe(bad)
    bad.write_text('version = 2\ntask = "ks"\n[model]\npath = "m"\n[data]\nspec = "x"\n[train]\nepochs = "3"\n')
    with pytest.raises(InputError, match=r"\[train\] epochs: expected int"):
        load_recipe(bad)
    bad.write_text('version = 3\n')
    with pytest.raises(InputError, match="version must be 2"):
        load_recipe(bad)
    bad.write_text('version = 1\ntask = "ks"\n[score]\nmethod = "hib"\nlam = 0.9\n')  # before the renames
    with pytest.raises(InputError, match="rename them `scorer` and `noise`"):
        load_recipe(bad)


def test_cli_flags_override_the_recipe(tmp_path):
    write_tones(tmp_path / "d", {"a": 400.0, "b": 1200.0}, n=2)
    recipe = tmp_path / "r.toml"
    recipe.write_text('version = 2\ntask = "ks"\n[model]\npath = "arch:wav2vec2-tiny"\n[data]\nspec = "d"\n'
                      '[train]\nepochs = 3\nlr = 0.004\nbatch_size = 2\n')
    assert load_recipe(recipe).data.spec == str((tmp_path / "d").resolve())  # relative to the recipe
    cli("finetune", "--recipe", recipe, "--epochs", 1, "--out", tmp_path / "m")
    record = json.loads((tmp_path / "m" / "train.json").read_text())
    assert record["epochs"] == 1 and record["config"]["lr"] == 0.004 and record["config"]["batch_size"] == 2


# ------------------------------------------------------------------------ defaults by where the model comes from

def test_defaults_follow_the_model_source_and_explicit_values_win():
    from prunehead.recipe import tomllib
    from prunehead.training.config import SOURCE_DEFAULTS, default_train_config

    scratch, trained = default_train_config("arch:wav2vec2-tiny"), default_train_config("runs/model")
    assert (scratch.lr, scratch.head_lr, scratch.freeze_feature_encoder) == (1e-3, 1e-3, False)  # the demo's
    assert (trained.lr, trained.head_lr, trained.freeze_feature_encoder) == (5e-5, 1e-3, True)
    mine = default_train_config("arch:wav2vec2-tiny", lr=3e-4, freeze_feature_encoder=True)
    assert (mine.lr, mine.head_lr, mine.freeze_feature_encoder) == (3e-4, 1e-3, True)
    recipe = load_recipe(RECIPES / "w2v2-12x12-ks.toml")  # arch: model, its own lr written in the recipe
    written = tomllib.loads((RECIPES / "w2v2-12x12-ks.toml").read_text())["train"]["lr"]
    assert written != SOURCE_DEFAULTS["scratch"]["lr"]  # else the check below could not tell them apart
    assert default_train_config(recipe.model.path, **{
        k: v for k, v in recipe.train.__dict__.items() if v is not None}).lr == written
    assert set(SOURCE_DEFAULTS["scratch"]) == set(SOURCE_DEFAULTS["pretrained"])


def test_a_from_scratch_model_learns_with_the_defaults(tmp_path):
    """Issue 16: `finetune --model arch:...` as written (no flags) learns a separable task; the old
    fine-tuning defaults (lr 5e-5, frozen front end) on the same run learn far less."""
    from prunehead.training.config import default_train_config

    write_tones(tmp_path / "d", {"low": 300.0, "mid": 1000.0, "high": 2500.0}, n=16)
    record = finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "m", TrainConfig(), progress=False)
    assert record["config"]["lr"] == 1e-3 and record["config"]["freeze_feature_encoder"] is False
    assert record["final"]["accuracy"] >= 0.75 and record["warnings"] == []  # chance: 1/3
    assert json.loads((tmp_path / "m" / "train.json").read_text())["warnings"] == []
    old = finetune("arch:wav2vec2-tiny", str(tmp_path / "d"), tmp_path / "old",
                   default_train_config("a/trained/checkpoint"), progress=False)
    assert old["final"]["accuracy"] < record["final"]["accuracy"]


@pytest.mark.parametrize(("final", "labels", "eval_labels", "warns"), [
    ({"accuracy": 0.133}, list("abcdefghijkl"), None, True),  # the 12-keyword run (chance 0.083)
    ({"accuracy": 0.100}, list("0123456789"), None, True),  # its FSDD run
    ({"accuracy": 0.953}, list("0123456789"), None, False),
    ({"accuracy": 0.75}, ["a", "b"], [0, 0, 0, 1], True),  # always "a" on a 3:1 test set
    ({"accuracy": 0.0, "wer": 1.0}, None, None, True),  # ASR: every word wrong
    ({"accuracy": 0.6, "wer": 0.4}, None, None, False),
    ({}, ["a", "b"], None, False),  # no evaluation: nothing to say
])
def test_a_run_at_chance_says_so(final, labels, eval_labels, warns):
    from prunehead.training.config import chance_level, chance_warning

    message = chance_warning(final, chance_level(final, labels, eval_labels))
    assert (message is not None) is warns
    if warns:
        assert "chance" in message and "\n" not in message
