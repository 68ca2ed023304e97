"""The training engine: data-parallel training equals one process, shards and augmentation do not depend on
the number of processes, runs repeat exactly, and the thread count is fixed and restored."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prunehead.data import load_data, make_batches
from prunehead.data.augment import Augment
from prunehead.training.finetune import TrainConfig, finetune
from tests.test_train import write_tones

# 11 training clips at batch 4: the last batch has 3 rows, so 2 processes get 2 + 1 and at batch 5 one
# process's share of the last batch (1 row) is empty and stands in with weight 0.
CFG = dict(epochs=2, batch_size=5, lr=3e-3, head_lr=3e-3, warmup=0.0, freeze_feature_encoder=False, seed=3)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine") / "data"
    write_tones(root, {"low": 300.0, "mid": 900.0, "high": 2500.0}, n=4)  # 12 train clips, 6 test
    (root / "train" / "low" / "0.wav").unlink()  # 11
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("augment", [True, False])
def test_two_processes_train_to_the_weights_of_one(tones, tmp_path, augment):
    single = finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "one", TrainConfig(**CFG, augment=augment),
                      progress=False)
    script = Path(sys.executable).parent / "prunehead"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in CFG.items() if k != "freeze_feature_encoder"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(_free_port()), str(script), "finetune", "-m", "arch:wav2vec2-tiny", "-d", str(tones),
               "--out", str(tmp_path / "two"), "--train-feature-encoder", "--augment" if augment else "--no-augment",
               *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNEHEAD_PROGRESS": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("trained 2 epoch(s)") == 1 and "x 2 processes" in done.stdout  # rank 0 reports
    record = json.loads((tmp_path / "two" / "train.json").read_text())
    assert record["processes"] == 2 and single["processes"] == 1
    assert record["final"]["accuracy"] == single["final"]["accuracy"]
    assert record["final"]["loss"] == pytest.approx(single["final"]["loss"], abs=1e-4)
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=2e-5, rtol=1e-4, msg=key)


def test_shards_split_each_batch_and_augment_each_clip_the_same_way(tones):
    from transformers import Wav2Vec2FeatureExtractor

    data = load_data(str(tones), "train")
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    kwargs = dict(shuffle=True, seed=5, augment=Augment())
    whole = list(make_batches(data, fe, 4, **kwargs, shard=(0, 1)))
    parts = [list(make_batches(data, fe, 4, **kwargs, shard=(rank, 3))) for rank in range(3)]
    for i, batch in enumerate(whole):
        size = int(batch["global_size"])
        assert size == len(batch["labels"]) and batch["weight"].tolist() == [1.0] * size
        for rank in range(3):
            part = parts[rank][i]
            rows = list(range(size))[rank::3]
            if rows:
                assert part["weight"].tolist() == [1.0] * len(rows)
                torch.testing.assert_close(part["input_values"], batch["input_values"][rows])  # same clips, same noise
                assert part["labels"].tolist() == batch["labels"][rows].tolist()
            else:  # a stand-in row that counts for nothing
                assert part["weight"].tolist() == [0.0]
    plain = list(make_batches(data, fe, 4, shuffle=True, seed=5))
    assert not torch.equal(plain[0]["input_values"], whole[0]["input_values"])  # augmentation did something


def test_augment_keeps_length_and_repeats_with_its_seed():
    wave = np.sin(np.arange(16000) * 0.1).astype(np.float32)
    a = Augment().clip(wave, np.random.default_rng(7))
    b = Augment().clip(wave, np.random.default_rng(7))
    c = Augment().clip(wave, np.random.default_rng(8))
    assert a.shape == wave.shape and a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_run_repeats_byte_for_byte_and_restores_the_thread_count(tones, tmp_path):
    before = torch.get_num_threads()
    cfg = TrainConfig(**CFG, threads=2)
    first = finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "a", cfg, progress=False)
    second = finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "b", cfg, progress=False)
    assert torch.get_num_threads() == before and first["threads"] == 2
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert first["history"] == second["history"]
