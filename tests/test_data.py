"""Data loading: every spec kind, audio conversion against analytic signals, and bad input."""

from __future__ import annotations

import json
import re
import shutil

import datasets
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

from prunehead.data import (DIGITS, KS_LABELS, align_labels, fix_length, label_names, load_data, make_batches,
                            read_audio, spec_paths)
from prunehead.errors import DataError, InputError

RATE = 16_000


def tone(freq: float, seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_folder(root, layout: dict[str, dict[str, int]]) -> None:
    """`layout[split][label] = n` tone files (split "" = no split folder)."""
    for split, labels in layout.items():
        for k, (label, n) in enumerate(labels.items()):
            for i in range(n):
                path = root / split / label / f"{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone(200 + 100 * k, 0.1 + 0.05 * i), RATE)


# ----------------------------------------------------------------------------------------------- real sets

def test_fsdd_ks_test_split_is_takes_0_to_4_at_16khz(shared):
    root = shared / "data" / "fsdd" / "recordings"
    ds = load_data("fsdd-ks", "test")
    expected = sorted(p for p in root.glob("*.wav") if int(p.stem.split("_")[2]) < 5)
    assert len(ds) == len(expected) == 300
    row = ds[list(ds["path"]).index(str(expected[0]))]
    assert label_names(ds)[row["label"]] == DIGITS[int(expected[0].name[0])]
    assert len(row["audio"]) == 2 * sf.info(expected[0]).frames  # 8 kHz -> 16 kHz
    assert row["audio"].dtype == np.float32


def test_fsdd_sid_labels_speakers_with_path_override(shared, tmp_path):
    files = sorted((shared / "data" / "fsdd" / "recordings").glob("*_1[0-2].wav"))[:40]
    for f in files:
        shutil.copy(f, tmp_path)
    ds = load_data(f"fsdd-sid:{tmp_path}", "train")
    assert len(ds) == len(files)
    names = label_names(ds)
    for row_path, label in zip(ds["path"], ds["label"]):
        assert names[label] == re.match(r"\d_(\w+?)_\d+", str(row_path).rsplit("/", 1)[1])[1]
    with pytest.raises(DataError, match="no split 'validation'.*train, test"):
        load_data(f"fsdd-sid:{tmp_path}", "validation")


def test_speech_commands_uses_the_list_files_and_12_classes(shared):
    root = shared / "data" / "speech-commands-v0.01-300"
    listed = [line for line in (root / "testing_list.txt").read_text().split() if (root / line).exists()]
    ds = load_data("speech-commands", "test")
    assert len(ds) == len(listed)
    assert label_names(ds) == list(KS_LABELS)
    for path, label in zip(ds["path"], ds["label"]):
        word = str(path).split("/")[-2]
        assert label_names(ds)[label] == (word if word in KS_LABELS else "_unknown_")
    assert set(ds["length"][:].tolist()) <= {RATE}  # 1 s clips at 16 kHz
    every = load_data("speech-commands-all", "test")
    assert {label_names(every)[i] for i in every["label"]} == {str(p).split("/")[-2] for p in every["path"]}


def test_joined_specs_merge_label_names(shared):
    ds = load_data("fsdd-ks+speech-commands", "test", clip_seconds=1.0)
    names = label_names(ds)
    assert names[:10] == list(DIGITS) and names[10:] == list(KS_LABELS)
    assert set(ds["length"][:].tolist()) == {RATE}


# ----------------------------------------------------------------------------------------------- formats

def test_audiofolder_with_splits(tmp_path):
    write_folder(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    ds = load_data(str(tmp_path), "train")
    assert label_names(ds) == ["a", "b"] and sorted(ds["label"][:].tolist()) == [0, 0, 0, 1, 1]
    with pytest.raises(DataError, match="no split 'validation'; use --split with one of: test, train"):
        load_data(str(tmp_path), "validation")


def test_audiofolder_without_splits_is_train_only(tmp_path):
    write_folder(tmp_path, {"": {"x": 2, "y": 2}})
    assert len(load_data(str(tmp_path), "train")) == 4
    with pytest.raises(DataError, match="no split folders.*--split train"):
        load_data(str(tmp_path), "test")


def test_manifests_csv_and_jsonl(tmp_path):
    write_folder(tmp_path, {"": {"clips": 3}})
    rows = [{"path": f"clips/{i}.wav", "text": f"word {i}", "split": "train" if i else "test"} for i in range(3)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "m.csv").write_text("file,label\n" + "".join(f"clips/{i}.wav,{'odd' if i % 2 else 'even'}\n"
                                                             for i in range(3)))
    asr = load_data(str(tmp_path / "m.jsonl"), "train", task="asr")
    assert list(asr["text"]) == ["word 1", "word 2"]
    cls = load_data(str(tmp_path / "m.csv"), "test")
    assert [label_names(cls)[i] for i in cls["label"]] == ["even", "odd", "even"]
    with pytest.raises(DataError, match="no 'intent' column"):
        load_data(str(tmp_path / "m.csv"), "test", label_column="intent")
    with pytest.raises(DataError, match="task 'ks' needs labels"):
        load_data(str(tmp_path / "m.jsonl"), "train", task="ks")
    with pytest.raises(DataError, match="no split 'dev'"):
        load_data(str(tmp_path / "m.jsonl"), "dev")


def test_hub_datasets_are_decoded_with_soundfile(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", tone(440, 0.2, 8000), 8000)
    audio = pa.array([{"bytes": (tmp_path / "a.wav").read_bytes(), "path": "a.wav"}],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    features = datasets.Features({"audio": datasets.Audio(), "label": datasets.ClassLabel(names=["yes", "no"])})
    fake = datasets.Dataset(pa.table({"audio": audio, "label": [1]}), info=datasets.DatasetInfo(features=features))
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or fake)
    ds = load_data("superb:ks", "test")
    assert calls == [(("superb", "ks"), {"split": "test"})]
    assert label_names(ds) == ["yes", "no"] and ds[0]["label"] == 1 and len(ds[0]["audio"]) == 3200


# ----------------------------------------------------------------------------------------------- audio

def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
    left, right = tone(300, 0.5, 44_100), tone(300, 0.5, 44_100) * 0.5
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44_100, subtype="FLOAT")
    wave = read_audio(tmp_path / "s.wav", RATE)
    expected = 0.75 * tone(300, 0.5, RATE)  # mean of the channels, sampled at 16 kHz
    assert len(wave) == len(expected) == 8000
    assert np.max(np.abs(wave[200:-200] - expected[200:-200])) < 1e-3


def test_undecodable_and_empty_files_are_reported_by_path(tmp_path):
    write_folder(tmp_path, {"train": {"a": 2}})
    bad = tmp_path / "train" / "a" / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(DataError, match=f"cannot decode audio file {re.escape(str(bad))}"):
        load_data(str(tmp_path), "train")
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        ds = load_data(str(tmp_path), "train", on_error="skip")
    assert len(ds) == 2 and str(bad) not in list(ds["path"])
    bad.unlink()
    sf.write(bad, np.zeros(0, np.float32), RATE)
    with pytest.raises(DataError, match=f"{re.escape(str(bad))} is empty"):
        load_data(str(tmp_path), "train")


def test_empty_dataset_and_unknown_spec(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no audio files"):
        load_data(str(tmp_path), "train")
    with pytest.raises(DataError, match="is not a folder"):
        load_data(str(tmp_path / "nope"), "train")


def test_fix_length_centre_crops_and_pads():
    x = np.arange(10, dtype=np.float32)
    assert fix_length(x, 4).tolist() == [3, 4, 5, 6]
    assert fix_length(x, 12).tolist() == [*range(10), 0, 0]


# ----------------------------------------------------------------------------------------------- batches

def test_batches_pad_mask_and_label(tmp_path):
    write_folder(tmp_path, {"train": {"a": 3, "b": 3}})
    ds = load_data(str(tmp_path), "train")
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    batches = list(make_batches(ds, fe, 4, shuffle=True, seed=3))
    assert [len(b["labels"]) for b in batches] == [4, 2]
    order = [int(i) for b in batches for i in b["attention_mask"].sum(-1)]
    assert sorted(order) == sorted(ds["length"][:].tolist())  # every row once, mask = true length
    assert order != ds["length"][:].tolist()  # shuffled
    assert [int(i) for b in make_batches(ds, fe, 4, shuffle=True, seed=3) for i in b["labels"]] == \
        [int(i) for b in batches for i in b["labels"]]
    for b in make_batches(ds, fe, 4, equal_length=True):
        assert bool((b["attention_mask"] == 1).all())  # equal lengths: no padding at all


def test_whisper_batches_have_fixed_frames_and_no_mask(tmp_path):
    write_folder(tmp_path, {"train": {"a": 2}})
    ds = load_data(str(tmp_path), "train")
    fe = WhisperFeatureExtractor(chunk_length=2)
    batch = next(make_batches(ds, fe, 2))
    assert set(batch) == {"input_features", "labels"} and batch["input_features"].shape == (2, 80, 200)
    assert batch["labels"].dtype == torch.long


def test_align_labels_by_name(tmp_path):
    write_folder(tmp_path, {"train": {"a": 1, "b": 1}})
    ds = load_data(str(tmp_path), "train")
    aligned = align_labels(ds, ["b", "c", "a"])
    assert [label_names(aligned)[i] for i in aligned["label"]] == [label_names(ds)[i] for i in ds["label"]]
    assert align_labels(ds, ["LABEL_0", "LABEL_1"]) is ds
    with pytest.raises(DataError, match=r"labels \['a'\] of the data are not among"):
        align_labels(ds, ["b", "c"])


def test_max_samples_is_a_seeded_subset(tmp_path):
    write_folder(tmp_path, {"train": {"a": 5, "b": 5}})
    full = list(load_data(str(tmp_path), "train")["path"])
    some = list(load_data(str(tmp_path), "train", max_samples=4, seed=1)["path"])
    assert len(some) == 4 and set(some) < set(full) and some == [p for p in full if p in some]
    assert some == list(load_data(str(tmp_path), "train", max_samples=4, seed=1)["path"])
    assert some != list(load_data(str(tmp_path), "train", max_samples=4, seed=2)["path"])


# ----------------------------------------------------------------------------------------------- issue 17

def test_non_finite_samples_are_refused_naming_the_file(tmp_path):
    write_folder(tmp_path, {"": {"a": 2, "b": 2}})
    wave = tone(300, 0.2)
    wave[100] = np.nan
    bad = tmp_path / "a" / "nan.wav"
    sf.write(bad, wave, RATE, subtype="FLOAT")
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*non-finite"):
        load_data(str(tmp_path), "train")
    with pytest.warns(UserWarning, match="nan.wav"):
        ds = load_data(str(tmp_path), "train", on_error="skip")
    assert len(ds) == 4 and str(bad) not in list(ds["path"])


@pytest.mark.parametrize("rows, message", [
    ([{"audio": "0.wav", "label": "a"}, {"audio": "1.wav", "label": None}], "row 2 has a null 'label'"),
    ([{"audio": "0.wav", "label": "a"}, {"audio": "1.wav"}], "row 2 has no 'label'"),
    ([{"audio": "0.wav", "label": "a"}, {"path": "1.wav", "label": "b"}], "row 2 has no 'audio'"),
    ([{"audio": "0.wav", "label": "a"}, ["1.wav", "b"]], "row 2 is not a JSON object"),
], ids=["null-label", "missing-label", "missing-audio", "not-an-object"])
def test_jsonl_manifest_rows_are_checked(tmp_path, rows, message):
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", tone(300, 0.1), RATE)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=re.escape(f"manifest {tmp_path / 'm.jsonl'} {message}")):
        load_data(str(tmp_path / "m.jsonl"), "train")


def test_csv_manifest_with_bom_and_empty_label(tmp_path):
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", tone(300 + 500 * i, 0.1), RATE)
    (tmp_path / "m.csv").write_bytes("\ufeffaudio,label\n0.wav,a\n1.wav,b\n".encode())
    ds = load_data(str(tmp_path / "m.csv"), "train")
    assert label_names(ds) == ["a", "b"] and list(ds["label"]) == [0, 1]
    (tmp_path / "e.csv").write_text("audio,label\n0.wav,a\n1.wav,\n")
    with pytest.raises(DataError, match="row 2 has an empty 'label'"):
        load_data(str(tmp_path / "e.csv"), "train")


def test_broken_links_and_unreadable_folders_are_named(tmp_path, monkeypatch):
    write_folder(tmp_path, {"": {"a": 2, "b": 2}})
    (tmp_path / "b" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    with pytest.warns(UserWarning, match="gone.wav"):
        assert len(load_data(str(tmp_path), "train")) == 4
    import os as os_module

    real_walk = os_module.walk

    def walk(top, onerror=None, **kwargs):  # as if folder c could not be listed (root ignores chmod)
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "c")))
        yield from real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr("prunehead.data.sources.os.walk", walk)
    with pytest.warns(UserWarning, match=re.escape(str(tmp_path / "c")) + r" \(Permission denied\)"):
        load_data(str(tmp_path), "train")


@pytest.mark.parametrize("spec", ["", "+", " + "])
def test_empty_data_spec_parts_are_refused(tmp_path, monkeypatch, spec):
    write_folder(tmp_path, {"": {"a": 1}})
    monkeypatch.chdir(tmp_path)  # an empty part used to load the working directory
    with pytest.raises(DataError, match="empty part"):
        load_data(spec, "train")


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
def test_clip_seconds_must_be_positive(tmp_path, seconds):
    write_folder(tmp_path, {"": {"a": 1}})
    with pytest.raises(InputError, match="--clip-seconds"):
        load_data(str(tmp_path), "train", clip_seconds=seconds)


def test_spec_paths_name_the_local_inputs(tmp_path):
    assert spec_paths(f"{tmp_path}/a+fsdd-ks:{tmp_path}/b+hub:x+superb:ks") == [tmp_path / "a", tmp_path / "b"]


def test_worker_processes_give_the_same_batches_in_the_same_order(tmp_path):
    """Feature extraction in DataLoader workers (GPU throughput) changes nothing but where it runs."""
    from prunehead.data import make_batches
    from tests.test_train import write_tones

    write_tones(tmp_path / "d", {"a": 400.0, "b": 1200.0, "c": 2000.0}, n=5)
    ds = load_data(str(tmp_path / "d"), "train")
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    here = list(make_batches(ds, fe, 4, shuffle=True, seed=3))
    there = list(make_batches(ds, fe, 4, shuffle=True, seed=3, workers=2))
    assert len(here) == len(there) == 4
    for a, b in zip(here, there):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="workers"):
        next(make_batches(ds, fe, 4, workers=-1))
