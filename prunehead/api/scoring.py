"""`score`: the L x H (or L x I) importance of a model's heads (or FFN neurons) on drawn samples."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..heads import head_adapter
from ..pruning.score_files import save_scores
from ..scorers.base import model_device, to_device
from ..scorers.hib import value_statistics
from ..scorers.parallel import model_fingerprint, run, run_key
from ..scorers.registry import build_scorer
from ..specs import Data, Ranking
from ..workspace import ModelLike, Workspace, open_workspace

from .common import say


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


def score(model: ModelLike | Workspace, data: Data | str | None = None, ranking: Ranking | str = "hib", *,
          units: str = "heads", reference_samples: int = 0, device: str | torch.device | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, key: str = "",
          progress: bool = False) -> ScoreResult:
    """Score every attention head of `model` on `ranking.samples` seeded samples of `data.score_split`.

    Args:
        model: a path, hub id or loaded model (with `data`), or an open `Workspace` of the split to draw from.
        data: the data (`Data`, or a spec string); samples are drawn from its `score_split` in batches of
            its `batch_size`.
        ranking: a registered scorer's name, or a `Ranking` with its options, samples and seed.
        units: "heads"; "ffn" to score every FFN neuron instead (an (L, I) matrix, `prunehead.scorers.ffn`),
            "conv" every front-end conv channel (a (C, W) matrix, `prunehead.scorers.conv`); scorer taylor or
            magnitude; "layers" every encoder layer (an (L, 1) matrix, `prunehead.scorers.depth`); scorer taylor
            or occlusion.
        reference_samples: HIB only: estimate V's std from this many samples (0 = the scored ones).
        checkpoint, resume, key: per-batch checkpoint file, continue from it, and the run's identity.

    Cost: the scorer's (see its docstring), on the samples; data-parallel under torchrun.
    """
    ranking = Ranking(ranking) if isinstance(ranking, str) else ranking
    data = Data.of(data)
    if units in ("ffn", "conv", "layers"):
        if reference_samples or checkpoint is not None:
            raise InputError(f"--units {units} takes no --reference-samples or checkpoints")
        return _score_parts(units, model, data, ranking, device)
    if units != "heads":
        raise InputError(f"--units must be heads, ffn, conv or layers, got {units!r}")
    if ranking.scorer is None:
        raise InputError("give the scorer to run (a Ranking with a scorer name)")
    if reference_samples and ranking.scorer != "hib":
        raise InputError("--reference-samples sets HIB's V statistics; it applies to --scorer hib only")
    build_scorer(ranking.scorer, ranking.options, seed=ranking.seed)  # fail on bad options before anything loads
    ws = _workspace(model, data, device)
    method = build_scorer(ranking.scorer, ranking.options, task=(data.task if data else None) or ws.task.name,
                          seed=ranking.seed)
    method.progress = progress
    batch = data.batch_size if data is not None else 8
    drawn = ws.draw(ranking.samples, ranking.seed, batch)
    if progress and hasattr(method, "cost"):
        say(method.cost(len(drawn.paths), head_adapter(ws.model).kept_heads(ws.model)))
    if reference_samples:
        reference = ws.draw(reference_samples, ranking.seed, batch).batches
        where = model_device(ws.model)
        method.stats = value_statistics(ws.model, [to_device(b, where) for b in reference], method.min_std)
    weights = model_fingerprint(ws.model)  # recorded in the score file; keys the checkpoint
    if checkpoint is not None:  # resume only into the same weights, audio and options
        key = run_key(ws.model, drawn.paths, weights, options=key)
    outcome = run(method, ws.model, drawn.batches, ws.task.objective, checkpoint=checkpoint, key=key, resume=resume,
                  progress=progress)
    settings = {"model": ws.source or type(ws.model).__name__, "data": data.spec if data else None,
                "split": ws.split, "seed": ranking.seed, "batch_size": batch, "reference_samples": reference_samples}
    return ScoreResult(outcome.scores, ranking.scorer, method.params(), task=ws.task.name, sample_paths=drawn.paths,
                       spread=outcome.spread, world_size=outcome.world_size, device=model_device(ws.model).type,
                       settings=settings, model_fingerprint=weights, resumed=outcome.resumed,
                       split_half=outcome.split_half)


def _workspace(model: ModelLike | Workspace, data: Data | None, device: Any) -> Workspace:
    """The workspace of the split to draw from: `model` itself, or opened on `data.score_split`."""
    if isinstance(model, Workspace):
        return model
    if data is None:
        raise InputError("scoring needs data: give --data")
    return open_workspace(model, data.spec, data.score_split, task=data.task, device=device,
                          clip_seconds=data.clip_seconds, workers=data.workers)


def _score_parts(units: str, model: ModelLike | Workspace, data: Data | None, ranking: Ranking,
                 device: Any) -> ScoreResult:
    """`score(..., units="ffn" | "conv")`: the FFN neuron (L, I) or conv channel (C, W) scores (taylor on the
    drawn samples, or magnitude), by the unit kind's own scorer."""
    from ..units.kinds import KINDS

    kind = KINDS[units]
    if ranking.scorer not in kind.scorers:
        raise InputError(f"--units {units} scores with --scorer {' or '.join(kind.scorers)}, got {ranking.scorer!r}")
    if ranking.options:
        raise InputError(f"--units {units} takes no scorer options")
    batch = data.batch_size if data is not None else 8
    params = {} if units == "layers" else {"normalize_layers": True}
    if ranking.scorer in kind.data_free and data is None and not isinstance(model, Workspace):  # the weights alone
        from ..surgery import load
        from ..tasks import infer_task
        from ..training.models import pick_device

        net = load(str(model)).to(pick_device(device)) if isinstance(model, (str, Path)) else model
        settings = {"model": str(model) if isinstance(model, (str, Path)) else type(net).__name__, "data": None,
                    "split": None, "seed": ranking.seed, "batch_size": batch}
        return ScoreResult(kind.score(net, [], None, ranking), ranking.scorer, params, infer_task(net), [],
                           device=model_device(net).type, settings=settings, model_fingerprint=model_fingerprint(net),
                           units=units)
    ws = _workspace(model, data, device)
    drawn = None if ranking.scorer in kind.data_free else ws.draw(ranking.samples, ranking.seed, batch)
    matrix = kind.score(ws.model, drawn.batches if drawn else [], ws.task.objective, ranking)
    settings = {"model": ws.source or type(ws.model).__name__, "data": data.spec if data else None, "split": ws.split,
                "seed": ranking.seed, "batch_size": batch}
    return ScoreResult(matrix, ranking.scorer, params, ws.task.name, drawn.paths if drawn else [],
                       device=model_device(ws.model).type, settings=settings,
                       model_fingerprint=model_fingerprint(ws.model), units=units)
