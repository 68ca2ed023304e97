"""`score`: the L x H (or L x I) importance of a model's heads (or FFN neurons) on drawn samples."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..heads import head_adapter
from ..pruning.plan import save_scores
from ..scorers import get_scorer
from ..scorers.base import Scorer, model_device, to_device
from ..scorers.hib import value_statistics
from ..scorers.parallel import model_fingerprint, run, run_key
from ..scorers.registry import option_names
from ..workspace import ModelLike, Workspace

from .common import check_counts, data_workspace, say


# --------------------------------------------------------------------------------------------------- score

@dataclasses.dataclass
class ScoreResult:
    """What `score` returns: the (L, H) matrix (higher = more important) and how it was made."""

    scores: torch.Tensor
    scorer: str
    params: dict[str, Any]
    task: str
    sample_paths: list[str]
    spread: torch.Tensor | None = None  # (L, H) std of per-sample results, for sample scorers
    world_size: int = 1
    device: str = "cpu"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # model, data, split, seed, ...
    model_fingerprint: str | None = None  # of the scored weights: prune / sweep warn when it differs
    resumed: int = 0  # samples taken from a checkpoint rather than scored in this run
    units: str = "heads"  # or "ffn": an (L, I) matrix of feed-forward neurons
    split_half: float | None = None  # Spearman of the even- vs odd-sample scores (parallel.split_half)

    def save(self, path: str | Path) -> None:
        """Write the versioned score file (`prunehead.load_scores` reads it back)."""
        from .. import __version__
        import transformers

        extra = {**{k: v for k, v in self.settings.items() if k != "model"}, "params": self.params,
                 "samples": len(self.sample_paths), "task": self.task, "sample_paths": self.sample_paths,
                 "spread": self.spread.tolist() if self.spread is not None else None,
                 "split_half_spearman": self.split_half,
                 "world_size": self.world_size, "device": self.device,
                 "versions": {"prunehead": __version__, "torch": torch.__version__,
                              "transformers": transformers.__version__, "python": platform.python_version()}}
        save_scores(path, self.scores, self.scorer, str(self.settings.get("model", "")),
                    model_fingerprint=self.model_fingerprint, units=self.units, **extra)


def build_scorer(name: str, options: Mapping[str, Any] | None = None, *, task: str | None = None,
                 seed: int = 0) -> Scorer:
    """Scorer `name` with `options`; HIB gets the paper's per-task defaults, seeded scorers `seed`.

    Cheap: call it before loading anything to validate the options.
    """
    params = dict(options or {})
    if "seed" in option_names(name):
        params.setdefault("seed", seed)
    return get_scorer(name, task=task, **params)


def score(model: ModelLike | Workspace, data: str | None = None, scorer: str = "hib", *, split: str = "train",
          samples: int = 200, seed: int = 0, batch_size: int = 8, task: str | None = None,
          clip_seconds: float | None = None, reference_samples: int = 0, device: str | torch.device | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, key: str = "", progress: bool = False,
          units: str = "heads", workers: int = 0, **options: Any) -> ScoreResult:
    """Score every attention head of `model` on `samples` seeded samples of `split` of `data`.

    Args:
        model: a path, hub id or loaded model (with `data`), or an open `Workspace` of the split to draw from.
        scorer: a registered scorer (hib, attattr, gradient, occlusion, attention, random or a plugin).
        reference_samples: HIB only: estimate V's std from this many samples (0 = the scored ones).
        checkpoint, resume, key: per-batch checkpoint file, continue from it, and the run's identity.
        options: the scorer's options (`prunehead.scorers.registry.option_names(scorer)`).
        units: "heads", or "ffn" to score every FFN neuron instead (`scorer` taylor or magnitude; an (L, I)
            matrix, `prunehead.scorers.ffn`).

    Cost: the scorer's (see its docstring), on `samples` samples; data-parallel under torchrun.
    """
    check_counts(samples=samples, batch_size=batch_size)
    if units == "ffn":
        return _score_ffn(model, data, scorer, split, samples, seed, batch_size, task, clip_seconds, device,
                          reference_samples, checkpoint, options, workers)
    if units != "heads":
        raise InputError(f"--units must be heads or ffn, got {units!r}")
    if reference_samples and scorer != "hib":
        raise InputError("--reference-samples sets HIB's V statistics; it applies to --scorer hib only")
    build_scorer(scorer, options, seed=seed)  # fail on bad options before anything loads
    ws = model if isinstance(model, Workspace) else data_workspace(model, data, split, task, device, clip_seconds,
                                                                  workers=workers)
    method = build_scorer(scorer, options, task=task or ws.task.name, seed=seed)
    method.progress = progress
    drawn = ws.draw(samples, seed, batch_size)
    if progress and hasattr(method, "cost"):
        say(method.cost(len(drawn.paths), head_adapter(ws.model).kept_heads(ws.model)))
    if reference_samples:
        reference = ws.draw(reference_samples, seed, batch_size).batches
        where = model_device(ws.model)
        method.stats = value_statistics(ws.model, [to_device(b, where) for b in reference], method.min_std)
    weights = model_fingerprint(ws.model)  # recorded in the score file; keys the checkpoint
    if checkpoint is not None:  # resume only into the same weights, audio and options
        key = run_key(ws.model, drawn.paths, weights, options=key)
    outcome = run(method, ws.model, drawn.batches, ws.task.objective, checkpoint=checkpoint, key=key, resume=resume,
                  progress=progress)
    settings = {"model": ws.source or type(ws.model).__name__, "data": data,
                "split": ws.split, "seed": seed, "batch_size": batch_size, "reference_samples": reference_samples}
    return ScoreResult(outcome.scores, scorer, method.params(), ws.task.name, drawn.paths, outcome.spread,
                       outcome.world_size, model_device(ws.model).type, settings,
                       weights, resumed=outcome.resumed, split_half=outcome.split_half)


def _score_ffn(model: ModelLike | Workspace, data: str | None, scorer: str, split: str, samples: int, seed: int,
               batch_size: int, task: str | None, clip_seconds: float | None, device: Any, reference_samples: int,
               checkpoint: Any, options: Mapping[str, Any], workers: int = 0) -> ScoreResult:
    """`score(..., units="ffn")`: the (L, I) FFN neuron scores (taylor on the drawn samples, or magnitude)."""
    from ..scorers.ffn import METHODS, score_ffn

    if scorer not in METHODS:
        raise InputError(f"--units ffn scores with --scorer {' or '.join(METHODS)}, got {scorer!r}")
    if options or reference_samples or checkpoint is not None:
        raise InputError("--units ffn takes no scorer options, --reference-samples or checkpoints")
    ws = model if isinstance(model, Workspace) else data_workspace(model, data, split, task, device, clip_seconds,
                                                                  workers=workers)
    drawn = ws.draw(samples, seed, batch_size) if scorer == "taylor" else None
    matrix = score_ffn(ws.model, drawn.batches if drawn else (), ws.task.objective, method=scorer)
    settings = {"model": ws.source or type(ws.model).__name__, "data": data, "split": ws.split, "seed": seed,
                "batch_size": batch_size}
    return ScoreResult(matrix, scorer, {"normalize_layers": True}, ws.task.name, drawn.paths if drawn else [],
                       device=model_device(ws.model).type, settings=settings,
                       model_fingerprint=model_fingerprint(ws.model), units="ffn")
