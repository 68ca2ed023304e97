"""The training engine: one loop for `finetune` and recovery, data-parallel through Hugging Face accelerate.

`train_(model, task, train, evaluation, processor, cfg)` trains `model` in place. In one process it is
plain AdamW with warm-up; launched in several (`torchrun --nproc-per-node N $(which prunehead) finetune
...`, or `accelerate launch` on GPUs) `accelerate.Accelerator` wraps the model in DistributedDataParallel
(gloo on CPU, NCCL on GPUs) and every process takes the rows `rank::world` of each global batch. The loss
of a process is its share of the global batch's summed loss (x world, since DDP averages gradients), so
every step takes the gradient of the global batch's mean loss, as one process does: the two runs give
the same weights up to float rounding (tested). The global batches, their order and their augmentation
(seeded per clip) do not depend on the number of processes.

Runs repeat: `deterministic(seed)` seeds Python, NumPy (transformers' SpecAugment masks draw from it) and
torch, and turns on torch's deterministic algorithms; `threads(n)` fixes the CPU thread count.
Cost per epoch: one forward and backward pass per training clip, one forward pass per evaluation clip.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..data import make_batches
from ..data.augment import Augment
from ..errors import PruneheadError
from ..progress import bar as progress_bar

HEAD_PREFIXES = ("projector", "classifier", "lm_head")


class NonFiniteLossError(PruneheadError):
    """Training produced a NaN or infinite loss; nothing is written."""


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed every generator a training run draws from, and use torch's deterministic algorithms (warning
    where an op has none); the previous algorithm setting is restored on exit."""
    import transformers

    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    transformers.set_seed(seed)  # random, numpy, torch (and CUDA)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[int]:
    """torch's CPU threads set to `count` for the block (None: as they are); yields the count in use."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def is_main_process() -> bool:
    """True in a single process, and in the process of rank 0 of a torchrun / accelerate launch: the one that
    writes outputs and prints results."""
    return int(os.environ.get("RANK", "0")) == 0


def make_engine(device: torch.device) -> Any:
    """An `accelerate.Accelerator` for `device` (the launcher's process group when there is one)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = device.type == "cpu"
    state = PartialState._shared_state
    if state and (state.get("device") is not None) and (state["device"].type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)  # an earlier call in this process chose otherwise
    if device.type == "cuda" and device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(device)
    return Accelerator(cpu=cpu)


def optimizer(model: nn.Module, cfg: Any, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with two learning rates (backbone `cfg.lr`, task head `cfg.head_lr`); linear warm-up over
    `cfg.warmup` of the steps, then linear decay to 0."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if n.startswith(HEAD_PREFIXES)]
    body = [p for n, p in named if not n.startswith(HEAD_PREFIXES)]
    groups = [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    warm = max(1, round(cfg.warmup * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total_steps - s) / max(1, total_steps - warm))))
    return opt, sched


def train_(model: nn.Module, task: Any, train: Any, evaluation: Any, processor: tuple[Any, Any], cfg: Any, *,
           engine: Any, resume: dict[str, Any] | None = None,
           save: Any = None, progress: bool = True) -> dict[str, Any]:
    """Train `model` (in place) for `cfg.epochs` over `train`, evaluating `evaluation` after each epoch.

    Args:
        task: the objective (`prunehead.tasks.Task`): per-sample losses and the metric.
        processor: (feature extractor, tokenizer) that turn clips into batches.
        engine: from `make_engine`; its process group decides the shard of each batch.
        resume: a checkpoint state (`snapshot` keys) to continue from; None starts afresh.
        save: `save(name, state)` writes a checkpoint (called by the main process only); None: no checkpoints.

    Returns:
        epochs done, whether `cfg.max_seconds` stopped the run, wall seconds, final and per-epoch metrics.
    """
    rank, world = engine.process_index, engine.num_processes
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    opt, sched = optimizer(model, cfg, cfg.epochs * steps_per_epoch)
    epoch, skip, elapsed, history = 0, 0, 0.0, []
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        epoch, skip, elapsed, history = resume["epoch"], resume["step"], resume["elapsed"], resume["history"]
    wrapped, opt = engine.prepare(model, opt)  # DDP when launched in several processes; the scheduler stays ours
    augment = Augment(rate=processor[0].sampling_rate) if cfg.augment and "label" in train.column_names else None
    start, stopped = time.monotonic(), False

    def snapshot(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch, "step": step, "elapsed": elapsed + time.monotonic() - start, "history": history,
                "labels": model.config.id2label}

    while epoch < cfg.epochs and not stopped:
        wrapped.train()
        batches = make_batches(train, processor, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch,
                               augment=augment, shard=(rank, world))
        bar = progress_bar(batches, total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           enable=progress and engine.is_main_process)
        for step, batch in enumerate(bar):
            if step < skip:
                continue
            loss = _step(wrapped, task, batch, engine=engine, opt=opt, sched=sched, cfg=cfg, epoch=epoch, step=step)
            bar.set_postfix(loss=f"{loss:.3f}")
            if cfg.max_seconds is not None and _agree(engine, time.monotonic() - start > cfg.max_seconds):
                stopped = step + 1 < steps_per_epoch
                if stopped and save is not None and engine.is_main_process:
                    save(f"epoch-{epoch:03d}-step-{step + 1:05d}.pt", snapshot(step + 1))
                break
        bar.close()
        if stopped:
            warnings.warn(f"stopped after {cfg.max_seconds} s in epoch {epoch + 1}; pass --resume to go on",
                          stacklevel=2)
            break
        epoch, skip = epoch + 1, 0
        metrics = evaluate_on_main(model, task, evaluation, processor=processor, batch_size=cfg.batch_size,
                                   engine=engine, progress=progress)
        history.append({"epoch": epoch, **metrics})
        if save is not None and engine.is_main_process:
            save(f"epoch-{epoch:03d}.pt", snapshot(0))
        engine.wait_for_everyone()
        if cfg.max_seconds is not None and epoch < cfg.epochs:
            stopped = _agree(engine, time.monotonic() - start > cfg.max_seconds)
    model.eval()
    return {"epochs": epoch, "stopped_early": stopped, "wall_seconds": round(elapsed + time.monotonic() - start, 1),
            "final": history[-1] if history else {}, "history": history, "processes": world}


def _step(wrapped: nn.Module, task: Any, batch: dict[str, torch.Tensor], engine: Any, opt: Any, sched: Any,
          cfg: Any, epoch: int, step: int) -> float:
    """One optimizer step on this process's shard; returns the global batch's mean loss."""
    weight = batch.pop("weight").to(engine.device)  # (b,) 1 per row of this shard, 0 for a stand-in row
    size = int(batch.pop("global_size"))  # rows of the global batch
    batch = {k: v.to(engine.device) for k, v in batch.items()}
    per_sample = task.objective(wrapped(**task.model_inputs(batch)), batch)  # (b,)
    local = (per_sample * weight).sum()
    engine.backward(local * engine.num_processes / size)  # DDP averages over processes: the global mean
    total = engine.reduce(local.detach(), reduction="sum") / size if engine.num_processes > 1 else local.detach() / size
    _check(total, epoch, step, "loss")
    norm = engine.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
    _check(norm, epoch, step, "gradient norm")
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(total)


def _check(value: torch.Tensor, epoch: int, step: int, what: str) -> None:
    """Stop at the first non-finite loss (or gradient norm): the weights would turn NaN from here on."""
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"the training {what} is {value.item()} at epoch {epoch + 1}, step {step + 1}; "
                                 "nothing was written: lower --lr, or check the data for broken clips")


def _agree(engine: Any, flag: bool) -> bool:
    """The main process's `flag`, the same in every process (a time limit must stop all of them at once)."""
    if engine.num_processes == 1:
        return flag
    from accelerate.utils import broadcast_object_list

    return bool(broadcast_object_list([flag], from_process=0)[0])


def evaluate_on_main(model: nn.Module, task: Any, evaluation: Any, processor: tuple[Any, Any], batch_size: int,
                     engine: Any, progress: bool) -> dict[str, float]:
    """The metrics of `model` on `evaluation`, measured by the main process and shared with the others."""
    if evaluation is None:
        return {}
    metrics = task.evaluate(model, make_batches(evaluation, processor, batch_size), progress=progress) \
        if engine.is_main_process else None
    if engine.num_processes == 1:
        return metrics
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([metrics], from_process=0)[0]
