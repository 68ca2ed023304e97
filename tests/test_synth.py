"""Synthesized data sets: layout, determinism, and that they load as the tasks need."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import soundfile as sf

from prunehead.data import KS_LABELS, label_names, load_data
from prunehead.errors import InputError
from prunehead.data.synth import speakers, synthesize


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ks_dir(tmp_path_factory):
    return synthesize("ks", tmp_path_factory.mktemp("ks") / "d", n_per_class=2, seed=7)


def test_ks_layout_and_clips(ks_dir):
    for split, n in (("train", 2), ("test", 1)):
        folders = sorted(p.name for p in (ks_dir / split).iterdir())
        assert folders == sorted(KS_LABELS)
        assert all(len(list((ks_dir / split / f).glob("*.wav"))) == n for f in folders)
    info = sf.info(ks_dir / "train" / "yes" / "00000.wav")
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000)
    speech, _ = sf.read(ks_dir / "train" / "stop" / "00001.wav")
    assert np.abs(speech).max() > 0.2  # a word was spoken, not just noise


def test_same_seed_same_bytes_other_seed_other_bytes(ks_dir, tmp_path):
    again = synthesize("ks", tmp_path / "again", n_per_class=2, seed=7)
    other = synthesize("ks", tmp_path / "other", n_per_class=2, seed=8)
    assert digest(again) == digest(ks_dir)
    wavs = [k for k in digest(ks_dir) if k.endswith(".wav")]
    assert all(digest(other)[k] != digest(ks_dir)[k] for k in wavs)


def test_ks_loads_as_audiofolder(ks_dir):
    ds = load_data(str(ks_dir), "test")
    assert label_names(ds) == sorted(KS_LABELS) and len(ds) == len(KS_LABELS)


def test_sid_ic_asr(tmp_path):
    sid = load_data(str(synthesize("sid", tmp_path / "sid", n_per_class=1, n_speakers=3)), "train")
    assert label_names(sid) == sorted(v.label for v in speakers(3))
    ic_dir = synthesize("ic", tmp_path / "ic", n_per_class=1)
    ic = load_data(str(ic_dir), "train", task="ic")
    assert all(n.count("|") == 2 for n in label_names(ic)) and len(ic) == len(label_names(ic))
    with (ic_dir / "train.csv").open() as f:
        for row in csv.DictReader(f):
            assert row["label"] == f"{row['action']}|{row['object']}|{row['location']}"
            assert row["object"] in row["text"] and (row["location"] == "none" or row["location"] in row["text"])
    asr = load_data(str(synthesize("asr", tmp_path / "asr", n_per_class=3)), "test", task="asr")
    assert len(asr) == 1 and len(str(asr[0]["text"]).split()) >= 6


def test_bad_requests(tmp_path):
    with pytest.raises(InputError, match="unknown synthesis task 'kws'"):
        synthesize("kws", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(InputError, match="is not empty"):
        synthesize("ks", tmp_path / "full")


@pytest.mark.slow
def test_whisper_hears_the_synthesized_keywords(ks_dir, shared):
    """Independent check that the clips are intelligible speech: Whisper tiny.en transcribes them."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = shared / "models" / "whisper-tiny.en"
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    processor = WhisperProcessor.from_pretrained(path)
    words = [w for w in KS_LABELS if not w.startswith("_")]
    waves = [sf.read(ks_dir / "train" / w / "00000.wav", dtype="float32")[0] for w in words]
    ids = model.generate(**processor(waves, sampling_rate=16000, return_tensors="pt"), max_new_tokens=8)
    heard = [t.lower().strip(" .!?,") for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert sum(w in h for w, h in zip(words, heard)) >= 6, heard
