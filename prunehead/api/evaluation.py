"""`evaluate` and `sweep`: metrics of a model, and pruning curves or the speed / accuracy frontier with heads
(and FFN neurons) gated (== removed)."""

from __future__ import annotations

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
from ..specs import Data, Frontier
from ..workspace import ModelLike, Workspace, open_workspace

from .common import ScoresLike, say, scores_for
from .pruner import Context


# ------------------------------------------------------------------------------------------------ evaluate

def evaluate(model: ModelLike, data: Data | str, *, split: str | None = None, device: str | None = None,
             source: str | Path | None = None, dtype: str = "float32", progress: bool = False) -> dict[str, float]:
    """The metrics of `model` on `split` (default `data.split`, else test) of `data` (accuracy; ASR: wer,
    cer and accuracy = 1 - WER).

    `model` may also be an `export onnx` folder (its final graph, run by ONNX Runtime) or a `.onnx` file in one.
    `dtype` "bfloat16" / "float16" evaluates under autocast (prunehead.precision). Cost: one forward pass
    per sample (plus `generate` for Whisper ASR).
    """
    check_dtype(dtype)
    data = Data.of(data)
    graph = onnx_graph(model) if isinstance(model, (str, Path)) else None
    if graph is not None:  # an `export onnx` folder: its graph, config and feature extractor
        model, source = load_onnx(graph), graph.parent
    ws = open_workspace(model, data.spec, split or data.split or "test", task=data.task, device=device,
                        batch_size=data.batch_size, clip_seconds=data.clip_seconds, on_error=data.on_error,
                        source=source, workers=data.workers)
    ws.dtype = dtype
    return ws.evaluate(progress=progress)


# --------------------------------------------------------------------------------------------------- sweep

def sweep(model: ModelLike, data: Data | str, scores: Mapping[str, ScoresLike] | Sequence[str | Path], *,
          ratios: str | Sequence[float] | None = None, scope: str = "global", metric: str = "accuracy",
          frontier: Frontier | None = None, device: str | None = None, dtype: str = "float32",
          progress: bool = False) -> dict[str, Any]:
    """Pruning curves: the metric at every ratio (or, per layer without ratios, K = 0..H-1 heads per layer)
    for every score matrix and for random scores (5 seeds), on `data.split` (default test), heads gated
    instead of removed (== removed). Cost: one evaluation of the split per distinct plan.

    With `frontier` (a `Frontier`), the speed / accuracy frontier of one head score matrix instead
    (`prunehead.experiments.frontier`): every head ratio x FFN ratio with heads and neurons gated, its MACs
    as a fraction of the dense model's, with `latency` its ONNX Runtime latency and speedup, and the
    Pareto-optimal points flagged. Returns the frontier record (frontier.json) instead of the curves.
    """
    check_dtype(dtype)
    data = Data.of(data)
    points = parse_ratios(ratios) if isinstance(ratios, str) else list(ratios) if ratios is not None else None
    if scope not in ("global", "per_layer"):
        raise InputError(f"scope must be 'global' or 'per_layer', not {scope!r}")
    if frontier is not None and len(scores) != 1:
        raise InputError(f"--ffn-ratios draws the frontier of one head ranking: give exactly one --scores file "
                         f"(got {len(scores)}); compare rankings without --ffn-ratios")
    if points is not None and any(not 0.0 <= v <= 1.0 for v in points):
        raise InputError(f"--ratios: every ratio must be within [0, 1], got {points}")
    ws = open_workspace(model, data.spec, data.split or "test", task=data.task, device=device,
                        batch_size=data.batch_size, clip_seconds=data.clip_seconds, workers=data.workers)
    ws.dtype = dtype
    sets = _score_sets(scores, ws.model)
    files = [str(s) for s in (scores.values() if isinstance(scores, Mapping) else scores) if isinstance(s, (str, Path))]
    given = {"model": str(model) if isinstance(model, (str, Path)) else None, "data": data.spec, "split": ws.split,
             "samples": ws.dataset.num_rows}
    if frontier is not None:
        return {**_frontier(ws, data, sets, points=points, scope=scope, metric=metric, frontier=frontier,
                            device=device, progress=progress), **given,
                "score_file": files[0] if files else None,
                "ffn_scorer": frontier.ffn.scorer if frontier.ffn.scores is None else None,
                "ffn_score_file": str(frontier.ffn.scores) if isinstance(frontier.ffn.scores, (str, Path)) else None,
                **({"conv_scorer": frontier.conv.scorer if frontier.conv.scores is None else None,
                    "conv_score_file": str(frontier.conv.scores) if isinstance(frontier.conv.scores, (str, Path))
                    else None} if frontier.conv_ratios else {}),
                **({"layer_scorer": frontier.layers.scorer if frontier.layers.scores is None else None,
                    "layer_score_file": str(frontier.layers.scores) if isinstance(frontier.layers.scores, (str, Path))
                    else None} if frontier.layer_ratios else {})}
    H = head_adapter(ws.model).num_heads
    result = run_sweep(ws.model, ws.evaluate, sets, metric=metric, scope=scope,
                       ratios=points if points is not None else parse_ratios("0:0.9:0.1"),
                       heads=list(range(H)) if scope == "per_layer" and points is None else None, progress=progress)
    return {**result, "best": best_curve(result), **given, "score_files": files}


def _frontier(ws: Workspace, data: Data, sets: dict[str, torch.Tensor], points: list[float] | None, scope: str,
              metric: str, frontier: Frontier, device: str | None, progress: bool) -> dict[str, Any]:
    """`sweep` with a frontier: the neurons ranked (scored here, on the score split, when no file is given)."""
    ((name, head_scores),) = sets.items()
    if progress and frontier.ffn.scores is None:
        say(f"frontier: scoring the FFN neurons with {frontier.ffn.scorer}"
            + (f" on {frontier.ffn.samples} samples of {data.score_split}" if frontier.ffn.scorer != "magnitude" else ""))
    rankings = {"ffn": frontier.ffn, **({"conv": frontier.conv} if frontier.conv_ratios else {}),
                **({"layers": frontier.layers} if frontier.layer_ratios else {})}
    ctx = Context(ws.model, ws.source, rankings, data, device, progress)
    ctx.scoring.share_(ws)  # scoring on the evaluated split reads it once
    scores = {"heads": head_scores, **{kind: ctx.matrix(kind) for kind in rankings}}
    ratios = {"ffn": list(frontier.ffn_ratios), **({"conv": list(frontier.conv_ratios)} if frontier.conv_ratios else {}),
              **({"layers": list(frontier.layer_ratios)} if frontier.layer_ratios else {})}
    if points is None:  # per layer without --ratios: K = 0..H-1 heads per layer
        H = head_adapter(ctx.model).num_heads
        points = [k / H for k in range(H)]
    result = run_frontier(ctx.model, ws.evaluate, scores, {"heads": points, **ratios}, metric=metric, scope=scope,
                          settings=frontier, progress=progress)
    return {**result, "scorer": name}


def _score_sets(scores: Mapping[str, ScoresLike] | Sequence[str | Path], net: nn.Module) -> dict[str, torch.Tensor]:
    weights = model_fingerprint(net)  # hashed once for every file
    if isinstance(scores, Mapping):
        return {name: scores_for(s, net, weights) for name, s in scores.items()}
    sets: dict[str, torch.Tensor] = {}
    for file in scores:
        name = str(read_json(file).get("scorer", Path(file).stem))
        sets[name if name not in sets else f"{name}:{Path(file).stem}"] = scores_for(file, net, weights)
    return sets
