"""ONNX export of pruned and unpruned models: dynamic batch and length, verified against PyTorch.

Exporter: `torch.onnx.export(..., dynamo=True, dynamic_shapes=...)`. On torch 2.13 it exports every
supported family (wav2vec2 / HuBERT / data2vec-audio / WavLM classifiers and CTC, Whisper-encoder classifiers,
BERT-family) with uneven head counts and bias-only layers. `torch.export` traces batch and length as
symbols, so a shape computation that would bake in the example length fails at export time instead of
yielding a graph that is silently wrong at other lengths, which the TorchScript tracer behind the legacy
exporter (`dynamic_axes`, deprecated since torch 2.9) can do. The price is export time: symbolic
reasoning about the conv strides takes ~5-10 s for a tiny speech model (the legacy exporter: < 1 s).

Whisper's encoder takes a fixed window (2 x max_source_positions mel frames; 3000 for real checkpoints),
so only its batch axis is dynamic.

Attention is exported in transformers' eager implementation (never prunehead's controller): the SDPA
decomposition adds reshapes and a NaN guard per layer (wav2vec2-12x12: 689 nodes vs 532), and its graph
ran 1-23 % slower in ONNX Runtime (1 s of audio at batch 1 .. 5 s; docs/benchmarks.md). The check
compares the graph with the model in its own implementation, so the switch is verified like the rest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..control import is_controlled
from ..errors import InputError, PruneheadError
from ..heads import head_adapter
from ..scorers.base import model_device, to_device
from .latency import ort_session

SAMPLE_RATE = 16_000
# Shapes (batch, length) that the check runs; no length equals the export example's (batch 2, length below).
EXAMPLE_LENGTH = {"speech": SAMPLE_RATE, "text": 16}
CHECK_SHAPES = {"speech": ((1, 5_920), (3, 20_641), (2, 32_480)), "text": ((1, 5), (3, 11), (2, 29))}


class ExportCheckError(PruneheadError):
    """The exported graph does not reproduce the PyTorch model within tolerance."""


@dataclass(frozen=True)
class Signature:
    """The graph's interface: input names, dynamic axes, and how to make inputs of a given shape.

    `kind` is "speech" (raw 16 kHz audio: dynamic batch and length), "whisper" (log-mel features of a
    fixed window: dynamic batch only) or "text" (token ids: dynamic batch and length).
    """

    kind: str
    input_names: tuple[str, ...]
    output_name: str
    fixed_length: int | None = None  # whisper: mel frames of the encoder window
    max_length: int | None = None  # text: usable positions
    vocab_size: int = 0
    num_mel_bins: int = 0

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {0: "batch"} if self.fixed_length else {0: "batch", 1: "length"}
        return {name: dict(axes) for name in self.input_names}

    def dims(self, name: str) -> list[str | int]:
        """The axes of input `name`: symbolic names or fixed sizes."""
        if self.kind == "whisper":
            return ["batch", self.num_mel_bins, self.fixed_length]
        return ["batch", "length"]

    def length(self, requested: int) -> int:
        """The length actually used for a requested one (fixed for Whisper, capped for text)."""
        if self.fixed_length:
            return self.fixed_length
        return min(requested, self.max_length) if self.max_length else requested

    def example_shape(self) -> tuple[int, int]:
        """(batch, length) traced at export; batch 2 so that torch.export does not specialise batch 1."""
        return 2, self.length(EXAMPLE_LENGTH.get(self.kind, 0))

    def check_shapes(self) -> tuple[tuple[int, int], ...]:
        if self.fixed_length:  # only the batch can vary
            return ((1, self.fixed_length), (3, self.fixed_length))
        shapes = tuple((b, self.length(n)) for b, n in CHECK_SHAPES[self.kind])
        return tuple(s for s in shapes if s[1] != self.example_shape()[1])

    def inputs(self, batch: int, length: int, seed: int = 0, pad: bool = False) -> dict[str, torch.Tensor]:
        """Random inputs of shape (batch, length); with `pad`, the last row is padded after 60 %."""
        gen = torch.Generator().manual_seed(seed)
        length = self.length(length)
        if self.kind == "whisper":
            return {"input_features": torch.randn(batch, self.num_mel_bins, length, generator=gen)}  # (B, mel, T)
        mask = torch.ones(batch, length, dtype=torch.long)  # (B, T)
        if pad and batch > 1:
            mask[-1, int(0.6 * length):] = 0
        if self.kind == "speech":
            values = torch.randn(batch, length, generator=gen) * mask  # (B, T), zero-padded like the extractor
            named = {"input_values": values, "attention_mask": mask}
        else:
            named = {"input_ids": torch.randint(self.vocab_size, (batch, length), generator=gen),
                     "attention_mask": mask, "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}
        return {name: named[name] for name in self.input_names}


def signature(model: nn.Module) -> Signature:
    """The ONNX interface of `model`: its family's inputs (`Family.export_inputs`) and its first output.

    Raises:
        UnsupportedModelError: an architecture without a head adapter, or a Whisper encoder-decoder.
    """
    output = "logits" if "For" in type(model).__name__ else "last_hidden_state"
    kind, names, facts = head_adapter(model).family.export_inputs(model)
    return Signature(kind, names, output, **facts)


class _Graph(nn.Module):
    """Positional tensors in, the model's first output (logits or hidden states) out."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs, strict=True)))[0]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _eager_attention(model: nn.Module) -> contextlib.AbstractContextManager:
    """The model's family's exportable attention inside the block; restored after."""
    return head_adapter(model).family.exportable(model)


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence warnings and the named loggers below ERROR (exporter and quantizer chatter)."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for name in loggers:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, opset: int | None = None) -> Signature:
    """Write `model` as a single-file ONNX graph with dynamic batch (and length) axes.

    Args:
        model: a supported model (not inside `controlled()`); exported with eager attention.
        path: the .onnx file to write (overwritten).
        opset: ONNX opset; None = the exporter's default.

    Returns:
        The graph's signature. Cost: one symbolic trace of the model (no real forward pass).
    """
    sig = signature(model)
    if is_controlled(model):
        raise InputError("the model is inside prunehead's `controlled()`; export it after leaving that block")
    batch, length = sig.example_shape()
    example = tuple(sig.inputs(batch, length).values())
    dynamic = (tuple(sig.dynamic_axes[name] for name in sig.input_names),)  # one entry: forward(*inputs)
    with _eval_mode(model), _eager_attention(model), _quiet("torch.onnx", "onnxscript", "onnx_ir"), torch.no_grad():
        try:
            program = torch.onnx.export(_Graph(model, sig.input_names).eval(), example, dynamo=True,
                                        dynamic_shapes=dynamic, input_names=list(sig.input_names),
                                        output_names=[sig.output_name], opset_version=opset, verbose=False)
        except Exception as err:  # the exporter raises many types; the user needs one line
            raise PruneheadError(f"ONNX export of {type(model).__name__} failed ({_first_line(err)}); "
                                 "try another --opset or set PRUNEHEAD_DEBUG=1 for the trace") from err
    proto = program.model_proto
    got = opset_of(proto)
    if opset is not None and got != opset:  # the exporter falls back silently when it cannot convert
        raise InputError(f"the exporter cannot write opset {opset} (it produced {got}); use --opset {got} or higher")
    _require_dynamic(proto.graph, sig)
    _strip_metadata(proto.graph)
    onnx.save(proto, str(path))
    return sig


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset of a model."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _strip_metadata(graph: onnx.GraphProto) -> None:
    """Drop the per-node provenance (stack traces, module paths): about 2 kB a node, 2/3 of a tiny model's file."""
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:  # If / Loop bodies
                _strip_metadata(sub)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _require_dynamic(graph: onnx.GraphProto, sig: Signature) -> None:
    """Fail if the graph fixed an axis that should be dynamic."""
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        fixed = [axis for axis in sig.dynamic_axes.get(inp.name, {}) if not dims[axis].dim_param]
        if fixed:
            raise PruneheadError(f"the exported graph fixed axes {fixed} of {inp.name!r}; "
                                 "this model cannot be exported with dynamic shapes")


@dataclass(frozen=True)
class Comparison:
    """ONNX Runtime vs PyTorch on the same inputs."""

    max_abs_diff: float
    agreement: float  # fraction of equal argmax predictions (per sample, or per frame for CTC)
    shapes: tuple[tuple[int, int], ...]  # (batch, length) of each input

    def to_json(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "argmax_agreement": self.agreement,
                "inputs": [list(s) for s in self.shapes]}


def compare(model: nn.Module, path: str | Path, sig: Signature,
            shapes: tuple[tuple[int, int], ...] | None = None) -> Comparison:
    """Run the graph and the model on random inputs of `shapes` (default: the check shapes, padded)."""
    shapes = shapes or sig.check_shapes()
    session = ort_session(path, spin=False)
    worst, same, total = 0.0, 0, 0
    with _eval_mode(model), torch.no_grad():
        for seed, (batch, length) in enumerate(shapes):
            inputs = sig.inputs(batch, length, seed=seed, pad=True)
            expected = model(**to_device(inputs, model_device(model)))[0].float().cpu().numpy()
            got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
            if got.shape != expected.shape:
                raise ExportCheckError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} at input "
                                       f"{(batch, length)}; the exported graph is wrong")
            diff = float(np.abs(got - expected).max()) if got.size else 0.0
            worst = max(worst, diff if math.isfinite(diff) else math.inf)
            same += int((got.argmax(-1) == expected.argmax(-1)).sum())
            total += got[..., 0].size
    return Comparison(worst, same / max(total, 1), tuple(shapes))


def check_onnx(model: nn.Module, path: str | Path, sig: Signature, atol: float = 1e-4,
               shapes: tuple[tuple[int, int], ...] | None = None) -> Comparison:
    """`compare`, raising ExportCheckError when the largest difference exceeds `atol`."""
    result = compare(model, path, sig, shapes)
    if not result.max_abs_diff <= atol:
        raise ExportCheckError(f"ONNX Runtime differs from PyTorch by {result.max_abs_diff:.3g} (> --atol {atol:g}) "
                               f"on inputs {list(result.shapes)}. Try another --opset, "
                               "or pass a larger --atol if that difference is acceptable")
    return result


def optimize_onnx(src: str | Path, dst: str | Path) -> None:
    """Apply ONNX Runtime's extended graph optimizations offline (fusions; the result needs ORT's CPU EP)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(dst))
    del optimized.graph.value_info[:]  # stale intermediate shapes would break a later quantization's inference
    onnx.save(optimized, str(dst))


def quantize_int8(src: str | Path, dst: str | Path, convolutions: bool = False) -> None:
    """Dynamic int8 quantization of the MatMul/Gemm weights (activations quantized at run time); the
    convolutions (the waveform front end) stay fp32 unless `convolutions`: ONNX Runtime's dynamic int8 Conv
    is often slower than fp32 (docs/benchmarks.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = ["MatMul", "Gemm", *(["Conv"] if convolutions else [])]
    with _quiet("root", "onnxruntime"):  # root: "consider pre-processing" (shape inference we do not need)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def onnx_param_count(path: str | Path) -> int:
    """Elements of the graph's weight tensors: float (or int8-quantized) initializers and constants.

    Integer shape constants are not counted, so the count matches the model's parameters.
    """
    graph = onnx.load(str(path)).graph
    weights = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.name == "value"]
    return sum(math.prod(t.dims) for t in tensors if t.data_type in weights)
