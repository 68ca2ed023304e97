"""Running a scorer for real: data-parallel over processes, checkpointed, resumable.

Scoring is embarrassingly parallel over samples. Launch the same command in every process with an
existing engine (`torchrun --nproc-per-node 2 $(which prunehead) score ...`; on GPUs also `accelerate launch
--multi_gpu --num_processes 2 ...`; gloo on CPU, NCCL on GPUs). Plain `accelerate launch --num_processes N`
starts ONE process on a CPU-only machine (accelerate 1.15, measured), so it is not suggested there. Every
process prepares on all batches (e.g. HIB's V statistics, deterministic), scores the sample batches
i with i % world_size == rank, and the per-sample results are all-gathered and reduced in sample-id
order. A sample's result depends only on its batch and its id (seeds derive from ids), so the merged
matrix equals the single-process one exactly when the batches are the same.

With a checkpoint path, each finished batch's per-sample results are saved atomically (one file per
rank); a run restarted with the same parameters skips them, so an interrupted run resumes to exactly
the matrix an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from ..progress import bar as progress_bar

from ..errors import InputError
from .tools import (Batch, Objective, batch_size, check_batches, finish_scores,
                   gather_results, model_device, prepared, sample_batches, to_device)

CHECKPOINT_FORMAT = "prunehead.score-checkpoint"


@dataclasses.dataclass
class ScoreRun:
    """The outcome of `run`: the (L, H) scores, their per-sample spread, and the per-sample results."""

    scores: torch.Tensor
    spread: torch.Tensor | None
    ids: torch.Tensor  # (N,) sample ids, sorted
    results: torch.Tensor | None  # (N, ...) per-sample results in id order; None for non-sample scorers
    world_size: int = 1
    resumed: int = 0  # samples (of this rank) taken from the checkpoint instead of scored in this run
    split_half: float | None = None  # see `split_half`


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_distributed() -> bool:
    """True when started by torchrun (or `accelerate launch --multi_gpu`) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(device: str | torch.device | None = None) -> Iterator[tuple[int, int]]:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA) for the block; yields (rank, world).

    Outside a multi-process launch this yields (0, 1) and does nothing.
    """
    if not launched_distributed() or (dist.is_available() and dist.is_initialized()):
        yield world()
        return
    cuda = torch.device(device or "cpu").type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def fingerprint(**items: Any) -> str:
    """A stable hash of everything that determines a run's per-sample results."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict: every tensor's name, dtype, shape and bytes (weights and buffers).

    Cost: one pass over the weights (about 0.3 s for 40 M parameters on a CPU).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.device.type != "meta":
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(paths: list[str] | tuple[str, ...]) -> str:
    """SHA-256 over the samples' names and contents (files are read; other names, e.g. hub rows, count as names)."""
    digest = hashlib.sha256()
    for name in paths:
        digest.update(f"{name};".encode())
        path = Path(name)
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_key(model: nn.Module, paths: list[str] | tuple[str, ...], weights: str | None = None, **options: Any) -> str:
    """The checkpoint key of a score run: the model's weights (`weights`: its fingerprint, when known), the
    samples' contents and every option."""
    return fingerprint(weights=weights or model_fingerprint(model), data=data_fingerprint(paths), **options)


class Checkpoint:
    """Per-batch results of one rank, saved atomically after every batch.

    The file holds tensors and plain data only (read with `weights_only=True`) and is written through an
    exclusively created temp file beside it. `key` (see `run_key`) must match for a resume.
    """

    def __init__(self, path: str | Path, key: str, rank: int = 0, world_size: int = 1):
        path = Path(path)
        self.path = path if world_size == 1 else path.with_name(f"{path.name}.rank{rank}-of-{world_size}")
        self.key = key
        self.done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        _not_a_folder(self.path)

    @staticmethod
    def guard(path: str | Path, resume: bool, overwrite: bool) -> None:
        """Before a run: refuse a folder where a checkpoint goes, and an interrupted run's checkpoint that
        neither `resume` continues nor `overwrite` allows to replace (it is never deleted silently)."""
        files = Checkpoint.files(path)
        for file in files:
            _not_a_folder(file)
        if files and not resume and not overwrite:
            raise InputError(f"{files[0]} holds an interrupted run; pass --resume to continue it, or --overwrite "
                             "to start over")

    @staticmethod
    def files(path: str | Path) -> list[Path]:
        """Every checkpoint file of the run checkpointed at `path` (any rank, any world size)."""
        import glob

        path = Path(path)
        return sorted(p for p in [path, *path.parent.glob(f"{glob.escape(path.name)}.rank*-of-*")]
                      if p.exists() or p.is_symlink())

    def load(self) -> int:
        """Read the finished batches; InputError when the checkpoint belongs to a different run."""
        data = read_checkpoint(self.path, CHECKPOINT_FORMAT, self.key, "score")
        if data is None:
            return 0
        self.done = {int(k): (v["ids"], v["results"]) for k, v in data["batches"].items()}
        return len(self.done)

    def add(self, index: int, ids: torch.Tensor, results: torch.Tensor) -> None:
        self.done[index] = (ids, results)
        write_checkpoint(self.path, {"format": CHECKPOINT_FORMAT, "key": self.key, "batches": {
            str(k): {"ids": i, "results": r} for k, (i, r) in self.done.items()}})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def write_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """`torch.save(data)` to `path` through an exclusively created temp file beside it (never half-written)."""
    from ..output_guard import exclusive_temp

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = exclusive_temp(path.parent, path.name)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: Path, kind: str, key: str, what: str,
                    map_location: str | torch.device | None = None) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when there is none): tensors and plain data only (`weights_only`);
    InputError when it is not a `kind` checkpoint or belongs to a run with another `key`."""
    if not path.exists():
        return None
    try:
        data = torch.load(path, weights_only=True, map_location=map_location)
    except Exception as err:  # truncated, foreign, or holding objects other than tensors
        raise InputError(f"{path} is not a {what} checkpoint ({type(err).__name__}); delete it to start over") from None
    if not isinstance(data, dict) or data.get("format") != kind or data.get("key") != key:
        raise InputError(f"{path} was written by a run with other parameters, data or model; "
                         "re-run with the same options, or delete it to start over")
    return data


def _not_a_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise InputError(f"{path} is a folder, where the score checkpoint goes; move it or choose another --out")


def _gather(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rank, size = world()
    if size == 1:
        return pairs
    everything: list[Any] = [None] * size
    dist.all_gather_object(everything, pairs)
    return [pair for part in everything for pair in part]


def run(scorer: Any, model: nn.Module, batches: list[Batch], objective: Objective, *,
        checkpoint: str | Path | None = None, key: str = "", resume: bool = False,
        progress: bool = False) -> ScoreRun:
    """Score `batches` with `scorer`, sharded over the process group, checkpointed if asked.

    Args:
        checkpoint: where to save finished batches (per rank); None = no checkpointing.
        key: identifies the run (see `fingerprint`); a checkpoint with another key is refused.
        resume: continue from the checkpoint instead of starting over.
        progress: show a tqdm bar over samples (rank 0 only).
    """
    rank, size = world()
    if not hasattr(scorer, "score_batch"):  # a whole-matrix scorer (base.Scorer, not a SampleScorer)
        scores = scorer.score(model, batches, objective)
        return ScoreRun(scores, None, torch.arange(0), None, size)
    batches = check_batches(batches, True)
    store = Checkpoint(checkpoint, key, rank, size) if checkpoint is not None else None
    if store is not None and resume:
        store.load()
    elif store is not None:
        store.remove()
    device = model_device(model)
    with prepared(model):  # batches stay where they are; each moves to the device when it is scored
        context = scorer.prepare(model, batches, objective)
        work = [(i, part, ids) for i, (part, ids) in enumerate(sample_batches(model, batches)) if i % size == rank]
        pairs = []
        total = sum(len(ids) for _, _, ids in work)
        with progress_bar(total=total, enable=progress and rank == 0, unit="sample", desc=f"{scorer.name}") as bar:
            resumed, started, first = 0, time.monotonic(), True
            for index, part, ids in work:
                if store is not None and index in store.done:
                    pairs.append(store.done[index])
                    resumed += len(ids)
                else:
                    result = scorer.score_batch(model, to_device(part, device), objective, ids, context).detach().cpu()
                    if first and progress and rank == 0:  # what the whole run will cost, from its first batch
                        first = False
                        left = total - resumed - len(ids)
                        per = (time.monotonic() - started) / len(ids)
                        if left > 0:
                            bar.write(f"{scorer.name}: the first {len(ids)} samples took {per * len(ids):.1f} s; "
                                      f"about {_duration(per * left)} more for the other {left} "
                                      "(fewer --samples or --steps shorten it)")
                    if result.shape[0] != batch_size(part):
                        raise RuntimeError(f"{scorer.name}.score_batch returned {result.shape[0]} rows for "
                                           f"{batch_size(part)} samples")
                    pairs.append((ids, result))
                    if store is not None:
                        store.add(index, ids, result)
                bar.update(len(ids))
    pairs = _gather(pairs)
    ids = torch.cat([i for i, _ in pairs])
    results = gather_results([r for _, r in pairs], ids)
    scores = finish_scores(scorer.reduce(results), model)
    return ScoreRun(scores, scorer.spread(results), ids.sort().values, results=results, world_size=size,
                    resumed=resumed, split_half=split_half(scorer, results))


def split_half(scorer: Any, results: torch.Tensor) -> float | None:
    """Spearman correlation between the scores of the even- and the odd-numbered samples (in id order).

    The two halves are disjoint samples with independent noise (seeds derive from sample ids), so this is
    how well two runs with different seeds and N/2 samples each agree: a free estimate of how stable the
    ranking is. None below 4 samples or 3 heads. Cost: two `reduce` calls.
    """
    if results.shape[0] < 4:
        return None
    a, b = scorer.reduce(results[0::2]).flatten(), scorer.reduce(results[1::2]).flatten()  # (L * H,)
    keep = torch.isfinite(a) & torch.isfinite(b)  # removed heads are NaN
    if int(keep.sum()) < 3:
        return None
    return round(spearman(a[keep], b[keep]), 4)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (ties ranked by position)."""
    ranks = [x.double().argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"
