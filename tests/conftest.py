"""Shared fixtures: tiny models of every supported family, built in code, and the shared assets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2FeatureExtractor

from prunehead.architectures import build_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

FAMILIES = ["wav2vec2-tiny", "hubert-tiny", "data2vec-audio-tiny", "wavlm-tiny", "whisper-encoder-tiny", "bert-tiny"]


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


def logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The model's logits on `inputs`, without gradients."""
    with torch.no_grad():
        return model(**inputs).logits


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


DEAD = {0: (1, 3), 1: (0,)}  # 3 of 8 heads of a 2 x 4 wav2vec2: value rows and out_proj columns all zero
TONE_LABELS = ("a", "b", "c")


def kill_heads_(model, dead=DEAD):
    """Zero the value rows and out_proj columns of the `dead` heads ({layer: heads}) of a wav2vec2."""
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer, heads in dead.items():
            attention = model.wav2vec2.encoder.layers[layer].attention
            for h in heads:
                cols = slice(h * head_dim, (h + 1) * head_dim)
                attention.v_proj.weight[cols] = 0
                attention.v_proj.bias[cols] = 0
                attention.out_proj.weight[:, cols] = 0
    return model


def dead_head_workspace(root: Path, clips: dict[str, int], split: str):
    """A saved 2 x 4 wav2vec2 with the DEAD heads (`root/model`), a 3-tone audiofolder with `clips` per split
    (`root/data`), the workspace of `split`, and its gradient scores, also saved as `root/gradient.json`
    and negated as `root/anti.json`. Returns (workspace, scores)."""
    from prunehead import save_scores
    from prunehead.scorers import get_scorer
    from prunehead.workspace import open_workspace

    rng = np.random.default_rng(0)
    for name, n in clips.items():
        for i in range(n):
            label = TONE_LABELS[i % 3]
            (root / "data" / name / label).mkdir(parents=True, exist_ok=True)
            tone = np.sin(np.arange(8000) * (0.05 + 0.05 * (i % 3))) + 0.3 * rng.standard_normal(8000)
            sf.write(root / "data" / name / label / f"{i}.wav", tone.astype(np.float32), 16000)
    model = kill_heads_(tiny("wav2vec2-tiny", num_labels=3, id2label=dict(enumerate(TONE_LABELS)),
                             label2id={n: i for i, n in enumerate(TONE_LABELS)}))
    model.save_pretrained(root / "model")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "model")
    ws = open_workspace(str(root / "model"), str(root / "data"), split, batch_size=8)
    scores = get_scorer("gradient").score(ws.model, ws.batches(), ws.task.objective)
    save_scores(root / "gradient.json", scores, "gradient", "model")
    save_scores(root / "anti.json", -scores, "anti", "model")
    return ws, scores


def run_main(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the console entry point `prunehead.cli.main`, in process."""
    import contextlib
    import io

    from prunehead.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def dead_heads(tmp_path_factory):
    """A folder with the DEAD-head wav2vec2 (`model`), its tone data (train 12, validation 9, test 9 clips)
    and its gradient scores (`dead_head_workspace`); tests read it and write elsewhere."""
    root = tmp_path_factory.mktemp("dead-heads")
    dead_head_workspace(root, {"train": 12, "validation": 9, "test": 9}, "train")
    return root


def cli_ok(*args) -> str:
    """`prunehead ARGS` run in process; asserts exit code 0 and returns the output."""
    from typer.testing import CliRunner

    from prunehead.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def check_saved_folder(out: Path, data: Path, key: str, onnx_dir: Path) -> None:
    """A folder `prune` wrote: a fresh `prunehead.evaluate` on the test split equals report.json's `key`
    metrics exactly, and its ONNX export matches PyTorch (max |diff| < 1e-4)."""
    import json

    import prunehead

    report = json.loads((out / "report.json").read_text())
    fresh = prunehead.evaluate(str(out), str(data), split="test")
    assert fresh["accuracy"] == report[key]["accuracy"]  # the round trip holds
    cli_ok("export", "onnx", "-m", out, "--repeats", "2", "--out", onnx_dir)
    check = json.loads((onnx_dir / "export.json").read_text())["checks"]["export"]
    assert check["max_abs_diff"] < 1e-4


def same_metrics(fresh: dict, reported: dict) -> bool:
    """The metrics agree: the same keys, counts and accuracy exactly, losses and rates to float rounding (a
    model trained on one thread, or held with sliced weights or on the gated path, and re-read on two threads
    ends 1e-8 apart on some CPUs: the last digits of a sum, not a label or a clip)."""
    exact = {k: v for k, v in fresh.items() if k in ("accuracy", "samples")}
    return fresh.keys() == reported.keys() and exact == {k: reported[k] for k in exact} \
        and fresh == pytest.approx(reported, rel=1e-6, abs=0)
