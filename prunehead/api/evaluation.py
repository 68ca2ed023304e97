"""`evaluate` and `sweep`: metrics of a model, and pruning curves with heads gated (== removed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..curves import parse_ratios, run_sweep
from ..heads import head_adapter
from ..budget import best_curve
from ..plan import read_json
from ..precision import check_dtype
from ..scorers.parallel import model_fingerprint
from ..workspace import ModelLike, open_workspace

from .common import ScoresLike, scores_for
from .pruner import resolve_scope


# ------------------------------------------------------------------------------------------------ evaluate

def evaluate(model: ModelLike, data: str, *, split: str = "test", task: str | None = None, batch_size: int = 16,
             clip_seconds: float | None = None, device: str | None = None, on_error: str = "stop",
             source: str | Path | None = None, dtype: str = "float32", workers: int = 0,
             progress: bool = False) -> dict[str, float]:
    """The metrics of `model` on `split` of `data` (accuracy; ASR: wer, cer and accuracy = 1 - WER).

    `dtype` "bfloat16" / "float16" evaluates under autocast (prunehead.precision). Cost: one forward pass
    per sample (plus `generate` for Whisper ASR).
    """
    check_dtype(dtype)
    ws = open_workspace(model, data, split, task=task, device=device, batch_size=batch_size,
                        clip_seconds=clip_seconds, on_error=on_error, source=source, workers=workers)
    ws.dtype = dtype
    return ws.evaluate(progress=progress)



# --------------------------------------------------------------------------------------------------- sweep

def sweep(model: ModelLike, data: str, scores: Mapping[str, ScoresLike] | Sequence[str | Path], *,
          split: str = "test", ratios: str | Sequence[float] | None = None, scope: str = "global",
          metric: str = "accuracy", batch_size: int = 16, task: str | None = None,
          clip_seconds: float | None = None, device: str | None = None, dtype: str = "float32",
          workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Pruning curves: the metric at every ratio (or, per layer without ratios, K = 0..H-1 heads per layer)
    for every score matrix and for random scores (5 seeds), heads gated instead of removed (== removed).

    Cost: one evaluation of the split per distinct plan.
    """
    check_dtype(dtype)
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


def _score_sets(scores: Mapping[str, ScoresLike] | Sequence[str | Path], net: nn.Module) -> dict[str, torch.Tensor]:
    weights = model_fingerprint(net)  # hashed once for every file
    if isinstance(scores, Mapping):
        return {name: scores_for(s, net, weights) for name, s in scores.items()}
    sets: dict[str, torch.Tensor] = {}
    for file in scores:
        name = str(read_json(file).get("scorer", Path(file).stem))
        sets[name if name not in sets else f"{name}:{Path(file).stem}"] = scores_for(file, net, weights)
    return sets
