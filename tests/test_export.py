"""ONNX export: graph == PyTorch at lengths never traced, exact weight arithmetic, CLI, atomic outputs."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
import transformers as tf
from onnx import numpy_helper
from typer.testing import CliRunner

from prunehead import PruningPlan, prune_, save_pretrained
from prunehead.architectures import build_config
from prunehead.cli import app
from prunehead.cost import count_params
from prunehead.errors import UnsupportedModelError
from prunehead.export import pipeline
from prunehead.export.folder import write_model_files
from prunehead.export.latency import ort_session
from prunehead.export.onnx import ExportCheckError, export_onnx, onnx_param_count, signature
from prunehead.export.pipeline import ExportOptions, export_model, randomize_weights_
from prunehead.heads import head_adapter
from tests.conftest import tiny

# 3 layers x 4 heads of width 8: layer 0 keeps 2 heads, layer 1 none (bias-only block), layer 2 keeps 3.
PLAN = PruningPlan(3, 4, {0: (0, 2), 1: (0, 1, 2, 3), 2: (1,)})
HIDDEN, HEAD_DIM = 32, 8


def run_both(model: torch.nn.Module, path: Path, inputs: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(ONNX Runtime output, PyTorch output) on the same inputs."""
    with torch.no_grad():
        expected = model(**inputs)[0].numpy()
    return ort_session(path, spin=False).run(None, {k: v.numpy() for k, v in inputs.items()})[0], expected


def assert_dynamic(path: Path, axes: dict[str, list]) -> None:
    graph = onnx.load(str(path)).graph
    for inp in graph.input:
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == axes[inp.name], (inp.name, dims)


def weight_bytes(path: Path) -> int:
    graph = onnx.load(str(path)).graph
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


@pytest.fixture(scope="module")
def w2v2(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """(pruned classifier, its .onnx): wav2vec2-tiny with a layer-norm front end (takes a mask), heads [2, 0, 3]."""
    pruned = prune_(tiny("wav2vec2-tiny", num_labels=5, num_hidden_layers=3), PLAN)
    path = tmp_path_factory.mktemp("w2v2") / "pruned.onnx"
    export_onnx(pruned, path)
    return pruned, path


@pytest.fixture(scope="module")
def ctc(tmp_path_factory) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
    """(dense, pruned [2, 0, 3], folder with dense.onnx and pruned.onnx): a group-norm wav2vec2-tiny CTC model.

    Every parameter is drawn at random: the exporter stores equal tensors once (fresh models have many
    zero biases), which would blur the weight arithmetic.
    """
    dense = tiny("wav2vec2-tiny", task="asr", vocab_size=12, feat_extract_norm="group", num_hidden_layers=3)
    randomize_weights_(dense, std=0.1)
    pruned = prune_(copy.deepcopy(dense), PLAN)
    folder = tmp_path_factory.mktemp("ctc")
    export_onnx(dense, folder / "dense.onnx")
    export_onnx(pruned, folder / "pruned.onnx")
    return dense, pruned, folder


def test_pruned_wav2vec2_matches_pytorch_at_three_unseen_lengths(w2v2):
    pruned, path = w2v2
    sig = signature(pruned)
    assert head_adapter(pruned).heads_per_layer(pruned) == [2, 0, 3]
    assert_dynamic(path, {"input_values": ["batch", "length"], "attention_mask": ["batch", "length"]})
    traced = sig.example_shape()
    for batch, length in [(1, 7_001), (3, 12_345), (2, 24_000)]:
        assert (batch, length) != traced and length != traced[1]
        got, expected = run_both(pruned, path, sig.inputs(batch, length, seed=length, pad=True))
        assert got.shape == expected.shape == (batch, 5)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_pruned_ctc_model_matches_pytorch(ctc):
    _, pruned, folder = ctc
    sig = signature(pruned)
    assert sig.input_names == ("input_values",)  # group-norm front end (like wav2vec2-base-960h): no mask
    got, expected = run_both(pruned, folder / "pruned.onnx", sig.inputs(2, 9_999, seed=3))
    assert got.shape == expected.shape and got.shape[-1] == 12  # (B, frames, vocab)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_pruned_graph_is_smaller_by_exactly_the_removed_projection_weights(ctc):
    dense, pruned, folder = ctc
    removed_heads = sum(len(h) for h in PLAN.pruned_heads.values())  # 7
    per_head = 3 * (HEAD_DIM * HIDDEN + HEAD_DIM) + HIDDEN * HEAD_DIM  # q/k/v rows + biases, out_proj columns
    removed = removed_heads * per_head
    assert count_params(dense) - count_params(pruned) == removed
    assert onnx_param_count(folder / "dense.onnx") - onnx_param_count(folder / "pruned.onnx") == removed
    assert weight_bytes(folder / "dense.onnx") - weight_bytes(folder / "pruned.onnx") == 4 * removed  # float32
    file_saving = (folder / "dense.onnx").stat().st_size - (folder / "pruned.onnx").stat().st_size
    assert 4 * removed <= file_saving < 4 * removed + 8_192  # + the nodes of the emptied layer's attention


@pytest.mark.parametrize("arch, task, overrides, plan, shape", [
    ("whisper-encoder-tiny", "ks", {}, {0: (0, 3), 1: (0, 1, 2, 3)}, (3, 100)),
    ("bert-tiny", "ks", {}, {0: (2,), 1: (0, 1, 2, 3)}, (3, 23)),
    pytest.param("hubert-tiny", "asr", {"vocab_size": 12}, {0: (1, 2), 1: (0,)}, (3, 30_001), marks=pytest.mark.slow),
    pytest.param("data2vec-audio-tiny", "ks", {}, {0: (0, 1, 2, 3), 1: (3,)}, (2, 9_999), marks=pytest.mark.slow),
])
def test_every_family_matches_pytorch(tmp_path, arch, task, overrides, plan, shape):
    model = prune_(tiny(arch, task=task, **overrides), PruningPlan(2, 4, plan))
    sig = export_onnx(model, tmp_path / "m.onnx")
    assert shape != sig.example_shape()
    got, expected = run_both(model, tmp_path / "m.onnx", sig.inputs(*shape, seed=1, pad=True))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    if arch.startswith("whisper"):  # a fixed window: only the batch is dynamic
        assert_dynamic(tmp_path / "m.onnx", {"input_features": ["batch", 80, 100]})


def test_whisper_with_a_decoder_is_refused_in_one_line():
    config = build_config("whisper-encoder-tiny")
    with pytest.raises(UnsupportedModelError, match="WhisperForAudioClassification") as err:
        signature(tf.WhisperForConditionalGeneration(config))
    assert "\n" not in str(err.value)


def test_failed_check_writes_nothing(tmp_path, monkeypatch):
    model = prune_(tiny("whisper-encoder-tiny"), PruningPlan(2, 4, {0: (1,)}))

    def export_then_drift(m, path, opset=None):  # the graph no longer matches the model it is checked against
        sig = export_onnx(m, path, opset)
        with torch.no_grad():
            m.classifier.bias += 1.0  # (the exported graph keeps the old bias)
        return sig

    monkeypatch.setattr(pipeline, "export_onnx", export_then_drift)
    with pytest.raises(ExportCheckError, match="nothing was written"):
        export_model(model, tmp_path / "out", ExportOptions(repeats=1))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def saved_whisper(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("whisper") / "pruned"
    save_pretrained(prune_(tiny("whisper-encoder-tiny"), PruningPlan(2, 4, {0: (0, 1), 1: (0, 1, 2, 3)})), folder)
    return folder


def test_cli_exports_checks_and_times_against_the_unpruned_model(tmp_path, saved_whisper):
    out = tmp_path / "onnx" / "whisper-pruned"
    args = ["export", "onnx", "--model", str(saved_whisper), "--out", str(out), "--repeats", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "export.json", "model.onnx",
                                                     "preprocessor_config.json"]
    summary = json.loads((out / "export.json").read_text())
    assert summary["onnx"] == "model.onnx" and summary["graphs"] == {"export": "model.onnx"}
    assert summary["checks"]["export"]["max_abs_diff"] <= 1e-4
    assert summary["inputs"] == {"input_features": ["batch", 80, 100]} and summary["dynamic"].startswith("batch only")
    assert summary["model"]["heads_per_layer"] == [2, 0] and summary["unpruned"]["heads_per_layer"] == [4, 4]
    assert summary["unpruned"]["from"].startswith("rebuilt")
    assert summary["model"]["file_bytes"] == (out / "model.onnx").stat().st_size
    assert summary["ratios"]["params"] > 1 and summary["ratios"]["onnx_params"] > 1
    assert [row["batch"] for row in summary["latency"]["rows"]] == [1, 8]
    assert all(row["model_ms"] > 0 and row["unpruned_ms"] > 0 for row in summary["latency"]["rows"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "whisper" and config["prunehead_pruned_heads"] == {"0": [0, 1], "1": [0, 1, 2, 3]}

    before = (out / "model.onnx").read_bytes()
    again = CliRunner().invoke(app, args)  # existing --out without --overwrite
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
    assert (out / "model.onnx").read_bytes() == before
    beside = CliRunner().invoke(app, [*args[:4], "--out", str(out.parent / "second"), "--repeats", "1", "--no-check"])
    assert beside.exit_code == 0, beside.output  # exports sit side by side, one folder each
    assert (out.parent / "second" / "export.json").exists() and (out / "model.onnx").read_bytes() == before


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "cannot load a model"),
    (lambda tmp: tiny_gpt2(tmp), "not supported"),
])
def test_cli_rejects_bad_models_in_one_line(tmp_path, make, message):
    out = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", "onnx", "--model", str(make(tmp_path)), "--out", str(out)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "export.json").exists()


def tiny_gpt2(folder: Path) -> Path:
    config = tf.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32)
    tf.GPT2ForSequenceClassification(config).save_pretrained(folder / "gpt2")
    return folder / "gpt2"


@pytest.mark.slow
def test_optimized_and_quantized_graphs_are_rechecked_on_a_data_set(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("LABEL_0", "LABEL_1", "LABEL_2"):
        (tmp_path / "data" / "test" / label).mkdir(parents=True)
        for i in range(3):
            sf.write(tmp_path / "data" / "test" / label / f"{i}.wav", 0.1 * rng.standard_normal(16_000), 16_000)
    model = prune_(tiny("whisper-encoder-tiny"), PruningPlan(2, 4, {1: (0, 2)}))
    options = ExportOptions(optimize=True, quantize="int8", repeats=1, batches=(1,))
    summary = export_model(model, tmp_path / "m", options, data=str(tmp_path / "data"))
    graphs = {"export": "model.onnx", "optimize": "model_optimized.onnx", "quantize": "model_quantized.onnx"}
    assert summary["graphs"] == graphs and summary["onnx"] == "model_quantized.onnx"
    assert all((tmp_path / "m" / name).exists() for name in graphs.values())
    metrics = summary["checks"]["data"]["metrics"]
    assert set(metrics) == {"pytorch", "export", "optimize", "quantize"}
    assert metrics["export"]["accuracy"] == metrics["optimize"]["accuracy"] == metrics["pytorch"]["accuracy"]
    assert metrics["quantize"]["samples"] == 9
    assert summary["checks"]["optimize"]["max_abs_diff"] <= 1e-4
    assert 0.0 <= summary["checks"]["quantize"]["argmax_agreement"] <= 1.0


ORT_ONLY = r"""
import json, sys
import numpy as np
import onnxruntime as ort

folder, audio = sys.argv[1], np.load(sys.argv[2])  # audio: (T,) float32 at 16 kHz
settings = json.load(open(f"{folder}/preprocessor_config.json"))
config = json.load(open(f"{folder}/config.json"))
x = audio[None, :].astype(np.float32)  # (1, T)
if settings.get("do_normalize"):
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-7)
session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
feeds = {"input_values": x}
if "attention_mask" in {i.name for i in session.get_inputs()}:
    feeds["attention_mask"] = np.ones(x.shape, dtype=np.int64)
logits = session.run(None, feeds)[0]  # (1, labels)
label = config["id2label"][str(int(logits.argmax(-1)[0]))]
print(json.dumps({"logits": logits.tolist(), "label": label,
                  "imported": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


def test_exported_folder_runs_with_onnxruntime_alone(tmp_path, w2v2):
    """The folder is enough: numpy + onnxruntime + its preprocessor_config.json, in a process without torch."""
    pruned, graph = w2v2
    source = tmp_path / "source"
    extractor = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    extractor.save_pretrained(source)
    (tmp_path / "deploy").mkdir()  # what export_model writes (the CLI test checks the whole folder)
    shutil.copyfile(graph, tmp_path / "deploy" / "model.onnx")
    assert write_model_files(pruned, tmp_path / "deploy", str(source)) == ["preprocessor_config.json"]
    audio = np.random.default_rng(5).standard_normal(12_345).astype(np.float32) * 0.3
    np.save(tmp_path / "audio.npy", audio)
    run = subprocess.run([sys.executable, "-c", ORT_ONLY, str(tmp_path / "deploy"), str(tmp_path / "audio.npy")],
                         capture_output=True, text=True, check=True)
    got = json.loads(run.stdout)
    assert got["imported"] == []
    with torch.no_grad():
        expected = pruned(**extractor(audio, sampling_rate=16_000, return_tensors="pt")).logits
    np.testing.assert_allclose(np.array(got["logits"]), expected.numpy(), atol=1e-4, rtol=0)
    assert got["label"] == pruned.config.id2label[int(expected.argmax(-1))]


def test_timing_runs_in_a_process_of_its_own_with_one_shared_pool(tmp_path, w2v2):
    """The timed sessions share one thread pool in a fresh interpreter without PyTorch (a pool per session in
    this process let the waiting sessions' workers spin beside the running one: bench/bench_timing.py)."""
    from prunehead.export import latency

    _, path = w2v2
    feeds = {"input_values": np.random.default_rng(0).standard_normal((2, 4000), dtype=np.float32),
             "attention_mask": np.ones((2, 4000), dtype=np.int64)}
    times = latency.time_in_turns({"a": path, "b": path}, feeds, repeats=3, warmup=1, threads=1)
    assert sorted(times) == ["a", "b"] and all(len(t) == 3 and min(t) > 0 for t in times.values())
    np.savez(tmp_path / "feeds.npz", **feeds)
    (tmp_path / "request.json").write_text(json.dumps({"models": {"a": str(path)}, "repeats": 1, "warmup": 0,
                                                       "threads": 2}))
    subprocess.run([sys.executable, "-I", str(Path(latency.__file__).with_name("turns.py")), str(tmp_path)],
                   check=True)
    setup = json.loads((tmp_path / "times.json").read_text())["setup"]
    assert setup == {"thread_pool": "shared", "threads": 2, "torch_loaded": False}


def test_a_graph_that_cannot_be_timed_fails_in_one_line(tmp_path):
    from prunehead.errors import PruneheadError
    from prunehead.export.latency import time_in_turns

    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(PruneheadError, match=r"^timing with ONNX Runtime failed: .+") as err:
        time_in_turns({"a": tmp_path / "broken.onnx"}, {"input_values": np.zeros((1, 10), np.float32)}, repeats=1)
    assert "\n" not in str(err.value)
