"""`export_model`: export -> check -> optimize -> quantize -> measure against the unpruned model -> write a folder.

The output is a folder in the Hugging Face / optimum layout: `model.onnx` (+ `model_optimized.onnx`,
`model_quantized.onnx` when asked), `config.json`, the feature extractor / tokenizer files and the
`export.json` report. It appears complete or not at all: every stage runs in a temporary directory and
the folder is moved into place only after all checks passed, so any number of exports can sit side by
side (one folder each).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..cost import count_macs, count_params
from ..errors import InputError
from ..units.conv import dense_config, pruned_conv_of
from ..units.ffn import PRUNED_FFN_KEY, pruned_ffn_of
from ..heads import PRUNED_HEADS_KEY, head_adapter, pruned_heads_of
from ..output_guard import atomic_dir, check_output
from ..surgery import PREPROCESSING_FILES
from ..progress import say as progress_line
from .accuracy import data_metrics, load_eval_data
from .folder import GRAPH_NAMES, write_model_files
from .latency import DEFAULT_THREADS, side_by_side
from .onnx import (
    SAMPLE_RATE,
    ExportCheckError,
    Signature,
    check_onnx,
    compare,
    export_onnx,
    onnx_param_count,
    opset_of,
    optimize_onnx,
    quantize_int8,
    signature,
)

SUMMARY_NAME = "export.json"
SUMMARY_FORMAT = "prunehead.export"
QUANTIZATIONS = ("int8", "int8-conv")  # int8: MatMul / Gemm weights; int8-conv: the convolutions too
WRITTEN = (*GRAPH_NAMES.values(), "config.json", SUMMARY_NAME, *PREPROCESSING_FILES)  # every name an export may write


@dataclass(frozen=True)
class ExportOptions:
    """How to export and what to measure.

    Attributes:
        opset: ONNX opset (None = the exporter's default).
        optimize: also apply ONNX Runtime's extended graph optimizations (re-checked at `atol`).
        quantize: "int8" = dynamic int8 quantization of MatMul/Gemm weights (re-checked: argmax agreement),
            the convolutions left fp32; "int8-conv" quantizes them too.
        check: compare ONNX Runtime with PyTorch at lengths other than the export example's.
        atol: largest accepted absolute difference of the outputs.
        repeats: timed runs per model and input (median reported).
        threads: ONNX Runtime intra-op threads for latency.
        batches: batch sizes to time.
        lengths: input lengths to time: samples (speech) or tokens (text); Whisper uses its fixed window.
    """

    opset: int | None = None
    optimize: bool = False
    quantize: str | None = None
    check: bool = True
    atol: float = 1e-4
    repeats: int = 20
    threads: int = DEFAULT_THREADS
    batches: tuple[int, ...] = (1, 8)
    lengths: tuple[int, ...] = (SAMPLE_RATE,)

    def validate(self) -> None:
        """InputError for options that cannot work, before anything is traced."""
        if self.opset is not None:
            newest = onnx.defs.onnx_opset_version()
            if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not 7 <= self.opset <= newest:
                raise InputError(f"--opset must be a whole number within [7, {newest}] (the opsets onnx "
                                 f"{onnx.__version__} knows), not {self.opset!r}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise InputError(f"--quantize {self.quantize!r} is not supported; use one of: {', '.join(QUANTIZATIONS)}")
        if not self.atol > 0:
            raise InputError(f"--atol must be positive, got {self.atol}")
        if self.repeats < 1 or self.threads < 1 or not self.batches or min(self.batches) < 1:
            raise InputError("--repeats, threads and batch sizes must be at least 1")


def unpruned_reference(model: nn.Module) -> nn.Module | None:
    """The model's architecture with every head, neuron, channel and layer (random weights), or None if it lost
    none.

    The config keeps the original layout, so the dense model is rebuilt from it. Random weights change
    neither latency nor MACs; they are drawn by `randomize_weights_` so that the file size is a trained
    model's too.
    """
    from ..units.depth import PRUNED_LAYERS_KEY, removed_layers_of

    gone = removed_layers_of(model)
    if not pruned_heads_of(model) and not pruned_ffn_of(model) and not pruned_conv_of(model) and not gone:
        return None
    config = dense_config(model.config)
    for key in (PRUNED_HEADS_KEY, PRUNED_FFN_KEY, PRUNED_LAYERS_KEY):
        if hasattr(config, key):
            delattr(config, key)
    config.num_hidden_layers += len(gone)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return randomize_weights_(type(model)(config)).eval()


@torch.no_grad()
def randomize_weights_(model: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """Draw every parameter from N(0, std) in place, so that no two tensors are equal.

    A fresh init has many equal tensors (zero biases, unit norm weights), which the exporter stores once;
    a trained model has none, so graphs of fresh models would understate a trained model's file size.
    """
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model


def check_baseline(model: nn.Module, baseline: nn.Module) -> None:
    """A `--baseline` must be the same architecture as `model`, with every head."""
    a, b = head_adapter(model), head_adapter(baseline)
    if type(model) is not type(baseline) or (a.num_layers, a.num_heads) != (b.num_layers, b.num_heads):
        raise InputError(f"--baseline is a {type(baseline).__name__} with {b.num_layers} x {b.num_heads} heads but "
                         f"the model is a {type(model).__name__} with {a.num_layers} x {a.num_heads}; "
                         "pass the unpruned version of the same model")
    if pruned_heads_of(baseline) or pruned_ffn_of(baseline) or pruned_conv_of(baseline):
        raise InputError("--baseline is pruned; pass the model before pruning")


def _build(model: nn.Module, workdir: Path, options: ExportOptions,
           check: bool) -> tuple[dict[str, Path], Signature, dict[str, Any]]:
    """Export and post-process one model in `workdir`: ({stage: file, "final": file}, signature, {stage: check})."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {"export": workdir / "export.onnx"}
    sig = export_onnx(model, files["export"], options.opset)
    checks: dict[str, Any] = {}
    if check:
        checks["export"] = {"atol": options.atol, **check_onnx(model, files["export"], sig, options.atol).to_json()}
    if options.optimize:
        files["optimize"] = workdir / "optimized.onnx"
        optimize_onnx(files["export"], files["optimize"])
        if check:
            checks["optimize"] = {"atol": options.atol,
                                  **check_onnx(model, files["optimize"], sig, options.atol).to_json()}
    if options.quantize is not None:
        files["quantize"] = workdir / "int8.onnx"
        quantize_int8(files.get("optimize", files["export"]), files["quantize"], options.quantize == "int8-conv")
        if check:  # int8 cannot meet atol: report how often the prediction stays the same instead
            checks["quantize"] = compare(model, files["quantize"], sig).to_json()
    files["final"] = list(files.values())[-1]
    return files, sig, checks


def _describe(model: nn.Module, path: Path, sig: Signature, lengths: list[int]) -> dict[str, Any]:
    macs = {str(n): count_macs(model, sig.inputs(1, n))["total"] for n in lengths}
    return {"file_bytes": path.stat().st_size, "params": count_params(model), "onnx_params": onnx_param_count(path),
            "heads_per_layer": head_adapter(model).heads_per_layer(model), "macs_batch1": macs}


def _latency(model_file: Path, unpruned_file: Path, sig: Signature, lengths: list[int],
             options: ExportOptions, dense_fp32: Path) -> list[dict[str, Any]]:
    """Side-by-side median latency per (length, batch) of the final graph, the unpruned graph of the same
    stages (`unpruned_ms`, `speedup`) and, when those stages optimize or quantize, the unpruned model's
    plain fp32 export (`dense_fp32_ms`, `speedup_vs_dense_fp32`). Files may coincide (an unpruned model)."""
    named = {"model": model_file, "unpruned": unpruned_file, "dense_fp32": dense_fp32}
    files: dict[str, Path] = {}
    for name, path in named.items():
        if path not in files.values():
            files[name] = path
    rows = []
    for n in lengths:
        for batch in options.batches:
            feeds = {k: v.numpy() for k, v in sig.inputs(batch, n, seed=batch).items()}
            ms = side_by_side(files, feeds, options.repeats, threads=options.threads)
            timed = {name: ms[next(k for k, p in files.items() if p == path)] for name, path in named.items()}
            seconds = {"seconds": n / SAMPLE_RATE} if sig.kind == "speech" else {}
            row = {"batch": batch, "length": n, **seconds, "model_ms": round(timed["model"], 4),
                   "unpruned_ms": round(timed["unpruned"], 4), "speedup": round(timed["unpruned"] / timed["model"], 4)}
            if dense_fp32 != unpruned_file:
                row |= {"dense_fp32_ms": round(timed["dense_fp32"], 4),
                        "speedup_vs_dense_fp32": round(timed["dense_fp32"] / timed["model"], 4)}
            rows.append(row)
    return rows


def _reference(model: nn.Module, baseline: nn.Module | None, name: str | None) -> tuple[nn.Module | None, str]:
    if baseline is not None:
        check_baseline(model, baseline)
        return baseline, name or "the given baseline"
    reference = unpruned_reference(model)
    if reference is None:
        return None, "the model itself (it has every head)"
    return reference, "rebuilt from the model's config with every head (random weights)"


def _dynamic_note(sig: Signature) -> str:
    if sig.fixed_length:
        return (f"batch only: Whisper's encoder takes a fixed window of {sig.fixed_length} mel frames "
                "(pad or cut the features to it)")
    return "batch and length"


def export_model(model: nn.Module, out: str | Path, options: ExportOptions = ExportOptions(), *,
                 baseline: nn.Module | None = None, data: str | None = None, split: str = "test",
                 source: str | None = None, baseline_source: str | None = None,
                 overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Export `model` into folder `out`, verify it, time it next to the unpruned model, write `export.json`.

    Args:
        model: a supported model, pruned by prunehead or not.
        out: the folder to write: `model.onnx` (+ optimized / int8 graphs), `config.json`, the
            preprocessing files of `source` (or a speech model's default feature extractor), `export.json`.
        options: export, check and timing options.
        baseline: the unpruned model to time against; default: rebuilt from `model`'s config.
        data: a data spec (see `prunehead.data.load_data`): the metric of PyTorch and of every stage's graph
            (exported, optimized, quantized) on its `split` goes into the summary.
        source, baseline_source: where `model` and `baseline` came from (folder or hub id; recorded in the
            summary, and `source`'s feature extractor / tokenizer files are copied).
        overwrite: replace an existing `out`.

    Returns:
        The summary that was written. Cost: two exports (model and unpruned reference), a few forward
        passes for the check, and (3 + repeats) ONNX Runtime runs per model, batch size and length.

    Raises:
        ExportCheckError: ONNX Runtime and PyTorch disagree beyond `options.atol` (nothing is written).
    """
    options.validate()
    out = check_output(out, overwrite, kind="dir", writes=WRITTEN)  # foreign files refused before tracing
    if out.suffix == ".onnx":
        raise InputError(f"--out {out} names a folder (model.onnx, config.json and export.json go inside); "
                         "drop the .onnx suffix")
    reference, reference_source = _reference(model, baseline, baseline_source)
    eval_data = load_eval_data(model, signature(model), data, split, source) if data is not None else None
    say = progress_line if progress else (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="prunehead-export-") as tmp:
        say("export: tracing the model to ONNX" + (" and checking it against PyTorch" if options.check else ""))
        try:
            files, sig, checks = _build(model, Path(tmp) / "model", options, options.check)
        except ExportCheckError as err:
            raise ExportCheckError(f"{err} (nothing was written)") from None
        if reference is not None:
            say("export: tracing the unpruned reference (for the size and latency comparison)")
        dense = files if reference is None else _build(reference, Path(tmp) / "unpruned", options, check=False)[0]
        unpruned_file = dense["final"]
        stages = {k: v for k, v in files.items() if k != "final"}
        if eval_data is not None:
            say(f"export: evaluating PyTorch and every graph on {data} ({split})")
            checks["data"] = {"spec": data, "split": split, "metrics": data_metrics(model, stages, sig, eval_data)}
        final = next(GRAPH_NAMES[k] for k, v in stages.items() if v == files["final"])
        say(f"export: timing ONNX Runtime, pruned vs unpruned ({options.repeats} runs per setting)")
        summary = {"format": SUMMARY_FORMAT, "version": 2, "source": source, "onnx": final,
                   "graphs": {stage: GRAPH_NAMES[stage] for stage in stages},
                   **_interface(files["final"], sig), "optimize": options.optimize, "quantize": options.quantize,
                   "checks": checks,
                   **_comparison(model, files["final"], reference, unpruned_file=unpruned_file,
                                 reference_source=reference_source, sig=sig, options=options,
                                 dense_fp32=dense["export"])}
        with atomic_dir(out, overwrite) as folder:
            for stage, path in stages.items():
                shutil.copyfile(path, folder / GRAPH_NAMES[stage])
            summary["preprocessing"] = write_model_files(model, folder, source)
            (folder / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _interface(path: Path, sig: Signature) -> dict[str, Any]:
    return {"opset": opset_of(onnx.load(str(path))), "inputs": {name: sig.dims(name) for name in sig.input_names},
            "output": sig.output_name, "dynamic": _dynamic_note(sig)}


def _comparison(model: nn.Module, model_file: Path, reference: nn.Module | None, unpruned_file: Path,
                reference_source: str, sig: Signature, options: ExportOptions, dense_fp32: Path) -> dict[str, Any]:
    """Sizes, parameters, MACs and latency of the model and its unpruned reference, with ratios."""
    lengths = sorted({sig.length(n) for n in options.lengths})
    mine = _describe(model, model_file, sig, lengths)
    dense = mine if reference is None else _describe(reference, unpruned_file, sig, lengths)
    ratios = {key: round(dense[key] / mine[key], 4) for key in ("params", "onnx_params", "file_bytes")}
    ratios |= {f"macs_{n}": round(dense["macs_batch1"][str(n)] / mine["macs_batch1"][str(n)], 4) for n in lengths}
    latency = {"threads": options.threads, "repeats": options.repeats, "statistic": "median",
               "unpruned_graph": "the unpruned model through the same stages (optimize / quantize) as the final graph",
               **({"dense_fp32_graph": "the unpruned model's plain fp32 export (no optimization, no quantization)"}
                  if dense_fp32 != unpruned_file else {}),
               "rows": _latency(model_file, unpruned_file, sig, lengths, options, dense_fp32)}
    return {"model": mine, "unpruned": {"from": reference_source, **dense}, "ratios": ratios, "latency": latency}
