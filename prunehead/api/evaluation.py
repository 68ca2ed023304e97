"""`evaluate` and `sweep`: metrics of a model, and pruning curves or the speed / accuracy frontier with heads
(and FFN neurons) gated (== removed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..experiments.curves import parse_ratios, run_sweep
from ..experiments.frontier import run_frontier
from ..heads import head_adapter
from ..pruning.budget import best_curve
from ..errors import InputError
from ..export.runtime import load_onnx, onnx_graph
from ..pruning.plan import read_json
from ..precision import check_dtype
from ..scorers.parallel import model_fingerprint
from ..workspace import ModelLike, open_workspace

from .common import ScoresLike, ScoreSplit, check_counts, say, scores_for
from .pruner import _ffn_matrix, resolve_scope


# ------------------------------------------------------------------------------------------------ evaluate

def evaluate(model: ModelLike, data: str, *, split: str = "test", task: str | None = None, batch_size: int = 16,
             clip_seconds: float | None = None, device: str | None = None, on_error: str = "stop",
             source: str | Path | None = None, dtype: str = "float32", workers: int = 0,
             progress: bool = False) -> dict[str, float]:
    """The metrics of `model` on `split` of `data` (accuracy; ASR: wer, cer and accuracy = 1 - WER).

    `model` may also be an `export onnx` folder (its final graph, run by ONNX Runtime) or a `.onnx` file in one.

    `dtype` "bfloat16" / "float16" evaluates under autocast (prunehead.precision). Cost: one forward pass
    per sample (plus `generate` for Whisper ASR).
    """
    check_dtype(dtype)
    graph = onnx_graph(model) if isinstance(model, (str, Path)) else None
    if graph is not None:  # an `export onnx` folder: its graph, config and feature extractor
        model, source = load_onnx(graph), graph.parent
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds, on_error=on_error, source=source, workers=workers)
    ws.dtype = dtype
    return ws.evaluate(progress=progress)



# --------------------------------------------------------------------------------------------------- sweep

def sweep(model: ModelLike, data: str, scores: Mapping[str, ScoresLike] | Sequence[str | Path], *,
          split: str = "test", ratios: str | Sequence[float] | None = None, scope: str = "global",
          metric: str = "accuracy", batch_size: int = 16, task: str | None = None,
          clip_seconds: float | None = None, device: str | None = None, dtype: str = "float32",
          workers: int = 0, progress: bool = False, ffn_ratios: str | Sequence[float] | None = None,
          ffn_scores: ScoresLike | None = None, ffn_scorer: str = "taylor", min_neurons_per_layer: int = 1,
          samples: int = 200, score_split: str = "train", seed: int = 0, latency: bool = False,
          batch_sizes: Sequence[int] | None = None, seconds: float = 1.0, repeats: int = 20) -> dict[str, Any]:
    """Pruning curves: the metric at every ratio (or, per layer without ratios, K = 0..H-1 heads per layer)
    for every score matrix and for random scores (5 seeds), heads gated instead of removed (== removed).
    Cost: one evaluation of the split per distinct plan.

    With `ffn_ratios`, the speed / accuracy frontier of one head score matrix instead (`prunehead.experiments.frontier`):
    the grid `ratios` x `ffn_ratios` (FFN neurons cut per layer, keeping `min_neurons_per_layer`, ranked
    by `ffn_scores` or scored here with `ffn_scorer`: taylor on `samples` of `data`'s `score_split`, or the
    data-free magnitude), each point's metric with heads and neurons gated, its MACs on `seconds` of input
    as a fraction of the dense model's, and with `latency` its ONNX Runtime latency at `batch_sizes`
    (default 1, 8) timed in turns with the dense model (`repeats` runs, median) and the speedup; the
    Pareto-optimal points are flagged. Returns the frontier record (frontier.json) instead of the curves.
    """
    check_dtype(dtype)
    if ffn_ratios is not None or latency or batch_sizes is not None or ffn_scores is not None:
        return _frontier(model, data, scores, split=split, ratios=ratios, scope=scope, metric=metric,
                         batch_size=batch_size, task=task, clip_seconds=clip_seconds, device=device, dtype=dtype,
                         workers=workers, progress=progress, ffn_ratios=ffn_ratios, ffn_scores=ffn_scores,
                         ffn_scorer=ffn_scorer, min_neurons_per_layer=min_neurons_per_layer, samples=samples,
                         score_split=score_split, seed=seed, latency=latency, batch_sizes=batch_sizes,
                         seconds=seconds, repeats=repeats)
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds, workers=workers)
    ws.dtype = dtype
    adapter = head_adapter(ws.model)
    sets = _score_sets(scores, ws.model)
    points = parse_ratios(ratios) if isinstance(ratios, str) else list(ratios) if ratios is not None else None
    per_layer_heads = scope == "per_layer" and points is None
    result = run_sweep(ws.model, ws.evaluate, sets, metric=metric, scope=resolve_scope(None, None, scope),
                       ratios=points if points is not None else parse_ratios("0:0.9:0.1"),
                       heads=list(range(adapter.num_heads)) if per_layer_heads else None, progress=progress)
    result["best"] = best_curve(result)
    result.update(model=str(model) if isinstance(model, (str, Path)) else None, data=data, split=split,
                  samples=ws.dataset.num_rows,
                  score_files=[str(s) for s in (scores.values() if isinstance(scores, Mapping) else scores)
                               if isinstance(s, (str, Path))])
    return result


def _frontier(model: ModelLike, data: str, scores: Mapping[str, ScoresLike] | Sequence[str | Path], *,
              split: str, ratios: str | Sequence[float] | None, scope: str, metric: str, batch_size: int,
              task: str | None, clip_seconds: float | None, device: str | None, dtype: str, workers: int,
              progress: bool, ffn_ratios: str | Sequence[float] | None, ffn_scores: ScoresLike | None,
              ffn_scorer: str, min_neurons_per_layer: int, samples: int, score_split: str, seed: int, latency: bool,
              batch_sizes: Sequence[int] | None, seconds: float, repeats: int) -> dict[str, Any]:
    """`sweep` with `ffn_ratios`: the speed / accuracy frontier (checks first, then loads)."""
    head_ratios, neuron_ratios, sizes = _check_frontier(scores, ratios, ffn_ratios, ffn_scorer, latency,
                                                        batch_sizes, seconds, repeats, samples)
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds, workers=workers)
    ws.dtype = dtype
    ((name, head_scores),) = _score_sets(scores, ws.model).items()
    if progress and ffn_scores is None:
        say(f"frontier: scoring the FFN neurons with {ffn_scorer}"
            + (f" on {samples} samples of {score_split}" if ffn_scorer != "magnitude" else ""))
    score_data = ScoreSplit(data, score_split, task, device, clip_seconds, ws.source)
    score_data.share_(ws)  # scoring on the evaluated split reads it once
    net, neuron_scores = _ffn_matrix(ws.model, ffn_scores, ffn_scorer, samples, seed, score_data)
    if head_ratios is None:  # per layer without --ratios: K = 0..H-1 heads per layer
        H = head_adapter(net).num_heads
        head_ratios = [k / H for k in range(H)]
    result = run_frontier(net, ws.evaluate, head_scores, neuron_scores, metric=metric, head_ratios=head_ratios,
                          ffn_ratios=neuron_ratios, scope=resolve_scope(None, None, scope),
                          min_neurons_per_layer=min_neurons_per_layer, seconds=seconds, latency=latency,
                          batch_sizes=sizes, repeats=repeats, progress=progress)
    files = [str(s) for s in (scores.values() if isinstance(scores, Mapping) else scores) if isinstance(s, (str, Path))]
    result.update(model=str(model) if isinstance(model, (str, Path)) else None, data=data, split=split,
                  samples=ws.dataset.num_rows, scorer=name, score_file=files[0] if files else None,
                  ffn_scorer=None if ffn_scores is not None else ffn_scorer,
                  ffn_score_file=str(ffn_scores) if isinstance(ffn_scores, (str, Path)) else None)
    return result


def _check_frontier(scores: Mapping[str, ScoresLike] | Sequence[str | Path], ratios: str | Sequence[float] | None,
                    ffn_ratios: str | Sequence[float] | None, ffn_scorer: str, latency: bool,
                    batch_sizes: Sequence[int] | None, seconds: float, repeats: int,
                    samples: int) -> tuple[list[float] | None, list[float], list[int]]:
    """One-line errors for frontier options that cannot work, before anything loads; the parsed grid."""
    from ..scorers.ffn import METHODS

    if ffn_ratios is None:
        raise InputError("--ffn-scores, --latency and --batch-sizes belong to the frontier: add --ffn-ratios "
                         "(e.g. --ffn-ratios 0 for heads only)")
    if len(scores) != 1:
        raise InputError(f"--ffn-ratios draws the frontier of one head ranking: give exactly one --scores file "
                         f"(got {len(scores)}); compare rankings without --ffn-ratios")
    if batch_sizes is not None and not latency:
        raise InputError("--batch-sizes are the batch sizes timed with --latency: add --latency or drop --batch-sizes")
    if ffn_scorer not in METHODS:
        raise InputError(f"--ffn-scorer must be one of {', '.join(METHODS)}, got {ffn_scorer!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"--seconds must be a finite number above 0, got {seconds}")
    check_counts(repeats=repeats, samples=samples)
    sizes = list(batch_sizes) if batch_sizes is not None else [1, 8]
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise InputError(f"--batch-sizes must be whole numbers of at least 1, e.g. 1,8; got {sizes}")
    heads = parse_ratios(ratios) if isinstance(ratios, str) else list(ratios) if ratios is not None else None
    neurons = parse_ratios(ffn_ratios, "--ffn-ratios") if isinstance(ffn_ratios, str) else list(ffn_ratios)
    for flag, values in (("--ratios", heads or []), ("--ffn-ratios", neurons)):
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise InputError(f"{flag}: every ratio must be within [0, 1], got {values}")
    if not neurons:
        raise InputError("--ffn-ratios is empty: give START:STOP:STEP or a comma list, e.g. 0:0.6:0.2")
    return heads, neurons, list(dict.fromkeys(sizes))


def _score_sets(scores: Mapping[str, ScoresLike] | Sequence[str | Path], net: nn.Module) -> dict[str, torch.Tensor]:
    weights = model_fingerprint(net)  # hashed once for every file
    if isinstance(scores, Mapping):
        return {name: scores_for(s, net, weights) for name, s in scores.items()}
    sets: dict[str, torch.Tensor] = {}
    for file in scores:
        name = str(read_json(file).get("scorer", Path(file).stem))
        sets[name if name not in sets else f"{name}:{Path(file).stem}"] = scores_for(file, net, weights)
    return sets
