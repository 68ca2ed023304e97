"""Issue 26 (reliability round 3), items 1-12: inputs named by manifests, resume that never loses work,
bounded resources, no code from model folders, non-finite models refused.

Everything deleted, overwritten or filled here lives in the test's own temporary folder; a full disk is
simulated (the write raises, the free space reads 0) except in the tmpfs test, which mounts its own.
"""

from __future__ import annotations

import errno
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor

from prunehead.errors import DataError, InputError
from tests.conftest import run_main, tiny

LABELS = ("yes", "no")


def _model(folder: Path, nan: bool = False) -> Path:
    model = tiny("wav2vec2-tiny", num_labels=2, id2label=dict(enumerate(LABELS)),
                 label2id={n: i for i, n in enumerate(LABELS)})
    if nan:
        with torch.no_grad():
            next(model.parameters()).view(-1)[7] = float("nan")  # one weight
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


def _clip(path: Path, samples: int = 4000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32), 16000)
    return path


def _audiofolder(root: Path, samples: int = 4000, split: str = "test") -> Path:
    for i, label in enumerate(LABELS):
        _clip(root / split / label / f"{i}.wav", samples, seed=i)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("r3") / "model")


# ------------------------------------------------------------------------------ item 1: a manifest's files are inputs

def test_out_never_overwrites_audio_a_manifest_names(model, tmp_path, monkeypatch):
    clip = _clip(tmp_path / "audio" / "a.wav")
    _clip(tmp_path / "audio" / "b.wav", seed=1)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "test.csv").write_text("path,label\n../audio/a.wav,yes\n../audio/b.wav,no\n")
    before = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("eval", "-m", model, "-d", "lists/test.csv", "--split", "test", "--out", "audio/a.wav",
                            "--overwrite")
    assert code == 1 and "input" in err and clip.read_bytes() == before, err


def test_a_folders_split_manifest_names_inputs_outside_the_folder(tmp_path):
    from prunehead.data import spec_paths

    clip = _clip(tmp_path / "elsewhere" / "a.wav")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text(json.dumps({"audio": "../elsewhere/a.wav", "label": "yes"}) + "\n")
    assert clip.resolve() in {p.resolve() for p in spec_paths(str(tmp_path / "data"))}
    from prunehead.output_guard import check_output

    with pytest.raises(InputError, match="input"):
        check_output(clip, overwrite=True, inputs=spec_paths(str(tmp_path / "data")))


# ------------------------------------------------------------------------------ items 2, 9, 12: finetune keeps work

def _tones(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, freq in (("low", 300.0), ("high", 2500.0)):
            for i in range(n):
                t = np.arange(4000) / 16000
                wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
                (root / split / label).mkdir(parents=True, exist_ok=True)
                sf.write(root / split / label / f"{i}.wav", wave.astype(np.float32), 16000)
    return root


def _cfg(**kw):
    from prunehead.training.finetune import TrainConfig

    return TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 1e-3, "head_lr": 1e-3, "eval_split": None, **kw})


def test_resume_into_a_folder_without_checkpoints_is_refused_before_training(tmp_path, monkeypatch):
    import prunehead.training.finetune as train

    data = _tones(tmp_path / "data")
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(train, "load_data", lambda *a, **k: pytest.fail("trained into a folder it cannot publish"))
    with pytest.raises(InputError, match="no checkpoints"):
        train.finetune("arch:wav2vec2-tiny", str(data), out, _cfg(), resume=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["data", "m"]


def test_a_finished_run_that_cannot_be_published_is_kept_for_resume(tmp_path, monkeypatch):
    import prunehead.training.finetune as train

    data, out = _tones(tmp_path / "data"), tmp_path / "m"
    real = train._write_outputs

    def and_someone_writes_out(work, *args):
        real(work, *args)
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")  # appears while the run finishes
    monkeypatch.setattr(train, "_write_outputs", and_someone_writes_out)
    with pytest.raises(InputError, match="kept in") as caught:
        train.finetune("arch:wav2vec2-tiny", str(data), out, _cfg(), progress=False)
    assert "--overwrite" not in str(caught.value)  # finetune has no --overwrite
    partial = tmp_path / ".m.partial"
    assert (partial / "model.safetensors").exists() and (partial / "checkpoints" / "epoch-002.pt").exists()
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    monkeypatch.undo()
    (out / "theirs.txt").rename(tmp_path / "theirs.txt")
    out.rmdir()
    record = train.finetune("arch:wav2vec2-tiny", str(data), out, _cfg(), resume=True, progress=False)
    assert record["epochs"] == 2 and (out / "model.safetensors").exists() and not partial.exists()


def test_a_full_disk_at_a_checkpoint_keeps_the_good_epochs(tmp_path, monkeypatch):
    import prunehead.output_guard as outputs
    from prunehead.errors import DiskFullError
    import prunehead.training.finetune as train

    data, out = _tones(tmp_path / "data"), tmp_path / "m"
    real_save, calls = torch.save, [0]

    def save(obj, path, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # epoch 3's checkpoint: torch.save's own message on a full disk
            monkeypatch.setattr(outputs, "free_bytes", lambda where: 0)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, path, *args, **kwargs)
    monkeypatch.setattr(train.torch, "save", save)
    with pytest.raises(DiskFullError, match="disk is full.*--resume"):
        train.finetune("arch:wav2vec2-tiny", str(data), out, _cfg(epochs=3), progress=False)
    checkpoints = tmp_path / ".m.partial" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-001.pt", "epoch-002.pt"]
    monkeypatch.undo()
    record = train.finetune("arch:wav2vec2-tiny", str(data), out, _cfg(epochs=3), resume=True, progress=False)
    assert record["epochs"] == 3 and len(record["history"]) == 3


def test_the_input_data_folder_is_never_adopted_as_the_work_folder(tmp_path, monkeypatch):
    from prunehead.training.finetune import finetune

    data = _tones(tmp_path / ".ftd.partial")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="trains in"):
        finetune("arch:wav2vec2-tiny", ".ftd.partial", "ftd", _cfg(), resume=True, progress=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert data.is_dir()


# ------------------------------------------------------------------------------ item 3: no code from a model folder

def _custom_code_model(folder: Path, marker: Path) -> Path:
    _model(folder)
    (folder / "custom_fe.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import Wav2Vec2FeatureExtractor\nclass CustomFE(Wav2Vec2FeatureExtractor):\n    pass\n")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.pop("feature_extractor_type", None)
    config["auto_map"] = {"AutoFeatureExtractor": "custom_fe.CustomFE"}
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    return folder


def test_a_folder_that_names_code_is_refused_without_an_opt_in(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    folder = _custom_code_model(tmp_path / "model", marker)
    data = _audiofolder(tmp_path / "data")
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "n")  # a terminal's prompt
    monkeypatch.delenv("PRUNEHEAD_TRUST_REMOTE_CODE", raising=False)
    code, _, err = run_main("eval", "-m", folder, "-d", data)
    assert code == 1 and "preprocessor_config.json" in err and "PRUNEHEAD_TRUST_REMOTE_CODE=1" in err, err
    assert not asked and not marker.exists()


def test_finetune_refuses_a_folder_that_names_code_before_loading_it(tmp_path, monkeypatch):
    import prunehead
    import prunehead.training.finetune as train

    folder = _custom_code_model(tmp_path / "model", tmp_path / "ran")
    monkeypatch.delenv("PRUNEHEAD_TRUST_REMOTE_CODE", raising=False)
    monkeypatch.setattr(train, "load_processor", lambda spec: pytest.fail("the processor loaded before the check"))
    with pytest.raises(InputError, match="preprocessor_config.json"):
        prunehead.finetune(str(folder), str(_audiofolder(tmp_path / "data", split="train")), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "ran").exists()


def test_the_opt_in_lets_the_folder_through(tmp_path, monkeypatch):
    import prunehead.workspace as workspace
    from prunehead.portable.trust import check_custom_code

    folder = _custom_code_model(tmp_path / "model", tmp_path / "ran")
    with pytest.raises(InputError, match="custom_fe|auto_map"):
        check_custom_code(folder)
    assert check_custom_code(folder, trust_remote_code=True) is True
    loaded = []
    monkeypatch.setattr(workspace, "load_trusted_processor",  # what would run the code: only recorded here
                        lambda spec: loaded.append(spec) or (Wav2Vec2FeatureExtractor(), None))
    monkeypatch.setenv("PRUNEHEAD_TRUST_REMOTE_CODE", "1")
    ws = workspace.open_workspace(str(folder), str(_audiofolder(tmp_path / "data")))
    assert loaded == [str(folder)] and ws.dataset.num_rows == 2


# ------------------------------------------------------------------------------ items 4, 5, 8: bounded audio

def _wav_with_rate(path: Path, rate: int, samples: int = 100) -> Path:
    """A PCM16 WAV whose header declares `rate` Hz (244 bytes for 100 samples)."""
    data = np.zeros(samples, np.int16).tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data)
    return path


@pytest.mark.parametrize("rate", [20_000_003, 1])
def test_an_absurd_sampling_rate_is_refused_quickly_naming_the_file(tmp_path, rate):
    from prunehead.data import read_audio

    bad = _wav_with_rate(tmp_path / "bad.wav", rate)
    assert bad.stat().st_size == 244
    start = time.monotonic()
    with pytest.raises(DataError, match=r"bad\.wav.*Hz"):
        read_audio(str(bad), 16000)
    assert time.monotonic() - start < 5


def test_on_error_skip_drops_a_file_with_an_absurd_rate(tmp_path):
    from prunehead.data import load_data

    root = _audiofolder(tmp_path / "data")
    _wav_with_rate(root / "test" / "yes" / "bad.wav", 20_000_003)
    with pytest.warns(UserWarning, match=r"bad\.wav"):
        dataset = load_data(str(root), "test", on_error="skip")
    assert dataset.num_rows == 2


def test_clips_shorter_than_the_receptive_field_are_refused_naming_the_file(model, tmp_path):
    data = _audiofolder(tmp_path / "data", samples=160)  # 10 ms: wav2vec2's front end needs 25 ms
    code, _, err = run_main("eval", "-m", model, "-d", data)
    assert code == 1 and "1.wav lasts 10 ms" in err and "Traceback" not in err, err


def test_on_error_skip_drops_clips_shorter_than_the_receptive_field(model, tmp_path):
    from prunehead import Data, evaluate

    data = _audiofolder(tmp_path / "data")
    _clip(data / "test" / "yes" / "short.wav", 160)
    with pytest.warns(UserWarning, match=r"short\.wav"):
        metrics = evaluate(str(model), Data(str(data), on_error="skip"))
    assert metrics["samples"] == 2


def test_clip_seconds_has_an_upper_bound(model, tmp_path, monkeypatch):
    import prunehead.data.loading as loading

    data = _audiofolder(tmp_path / "data")
    code, _, err = run_main("eval", "-m", model, "-d", data, "--clip-seconds", "50000")
    assert code == 2 and "600" in err, err
    monkeypatch.setattr(loading, "decode_items", lambda *a, **k: pytest.fail("decoded before the check"))
    with pytest.raises(InputError, match="--clip-seconds"):
        loading.load_data(str(data), "test", clip_seconds=50000.0)
    monkeypatch.setattr(loading, "memory_bytes", lambda: 2**20)  # a machine with 1 MiB
    with pytest.raises(InputError, match="GiB"):
        loading.load_data(str(data), "test", clip_seconds=10.0)


# ------------------------------------------------------------------------------ item 6: transcripts in any script

def test_transcripts_keep_their_letters_in_any_script():
    from prunehead.metrics import error_rate, normalize_text
    from prunehead.training.models import char_tokenizer

    assert normalize_text("Café Über!") == "café über"
    assert normalize_text("Привет, мир") == "привет мир"
    assert normalize_text("don't  stop_now 42") == "don't stop now 42"
    vocab = char_tokenizer(["привет мир", "мир"]).get_vocab()
    assert {"п", "р", "и", "в", "е", "т", "м"} <= set(vocab)
    assert error_rate([normalize_text("привет мор")], [normalize_text("привет мир")]) == 0.5


# ------------------------------------------------------------------------------ item 7: non-finite models

def test_a_model_with_one_nan_weight_is_refused_before_evaluation(tmp_path):
    folder = _model(tmp_path / "nan-model", nan=True)
    data = _audiofolder(tmp_path / "data")
    code, out, err = run_main("eval", "-m", folder, "-d", data)
    assert code == 1 and "NaN or infinite weights" in err and "accuracy" not in out, err


# ------------------------------------------------------------------------------ item 10: score checkpoints kept

@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from tests.conftest import dead_head_workspace

    root = tmp_path_factory.mktemp("r3-scored")
    dead_head_workspace(root, {"train": 6, "test": 3}, "train")
    return root


def test_score_without_resume_keeps_an_interrupted_runs_checkpoint(scored, tmp_path):
    out = tmp_path / "s.json"
    checkpoint = tmp_path / "s.json.ckpt"
    checkpoint.write_bytes(b"an interrupted run's batches")
    args = ("score", "-m", scored / "model", "-d", scored / "data", "--scorer", "gradient", "--samples", "2",
            "--out", out)
    code, _, err = run_main(*args)
    assert code == 1 and "--resume" in err and checkpoint.read_bytes() == b"an interrupted run's batches", err
    code, _, err = run_main(*args, "--overwrite")  # starting over is asked for explicitly
    assert code == 0 and out.exists() and not checkpoint.exists(), err


# ------------------------------------------------------------------------------ item 11: both outputs or neither

def test_a_failed_score_run_replaces_neither_output(scored, tmp_path):
    pair = tmp_path / "pair"
    (pair / "s.png").mkdir(parents=True)
    (pair / "s.json").write_text("old scores")
    code, _, err = run_main("score", "-m", scored / "model", "-d", scored / "data", "--scorer", "gradient",
                            "--samples", "2", "--out", pair / "s.json", "--overwrite")
    assert code == 1 and "folder" in err and (pair / "s.json").read_text() == "old scores", err
    assert sorted(p.name for p in pair.iterdir()) == ["s.json", "s.png"]


def test_atomic_files_restore_the_first_when_the_second_cannot_be_published(tmp_path):
    from prunehead.output_guard import atomic_files

    a, b = tmp_path / "a.json", tmp_path / "b.png"
    a.write_text("old a")
    with pytest.raises(InputError, match="folder"), atomic_files([a, b], overwrite=True) as (ta, tb):
        ta.write_text("new a")
        tb.write_text("new b")
        b.mkdir()  # appears before the publish
    assert a.read_text() == "old a" and b.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.png"]


def test_a_real_full_disk_is_reported_as_such(tmp_path):
    """On a 64 KiB tmpfs this test mounts (root only); nothing outside it is written."""
    import subprocess

    from prunehead.errors import DiskFullError
    from prunehead.output_guard import atomic_file

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(DiskFullError, match="disk is full"), atomic_file(mount / "big.bin") as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"x" * (1 << 20))
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_detection_needs_enospc_or_no_free_space(tmp_path, monkeypatch):
    import prunehead.output_guard as outputs

    assert outputs.is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert not outputs.is_disk_full(RuntimeError("a bug"), tmp_path)
    monkeypatch.setattr(outputs, "free_bytes", lambda where: 0)
    assert outputs.is_disk_full(RuntimeError("System error."), tmp_path)
