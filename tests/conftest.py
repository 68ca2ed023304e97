"""Shared fixtures: tiny models of every supported family, built in code, and the shared assets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prunehead.architectures import build_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

FAMILIES = ["wav2vec2-tiny", "hubert-tiny", "data2vec-audio-tiny", "whisper-encoder-tiny", "bert-tiny"]


def inputs_for(arch: str, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs that fit a tiny model of `arch`."""
    g = torch.Generator().manual_seed(seed)
    if arch.startswith("bert"):
        return {"input_ids": torch.randint(0, 100, (batch, 12), generator=g)}
    if arch.startswith("whisper"):
        return {"input_features": torch.randn(batch, 80, 100, generator=g)}
    return {"input_values": torch.randn(batch, 4000, generator=g)}


@pytest.fixture
def shared() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not beside the checkout")
    return SHARED


def tiny(arch: str, num_labels: int = 3, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, num_labels=num_labels, **overrides)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models on 2 shared cores run far faster single-threaded (no OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ce(outputs, batch):
    """Per-sample cross-entropy against the gold label: the objective scorers get in tests."""
    return F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="none")
