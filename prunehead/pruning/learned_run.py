"""Running the mask learner (`prunehead.pruning.learned`) over a train split: data-parallel, checkpointed,
resumable.

Launched in several processes (`torchrun --nproc-per-node 2 $(which prunehead) prune --method l0 ...`;
gloo on CPU, NCCL on GPUs) every process takes the rows rank::world of each global batch, draws the gates of
the whole batch and keeps its rows', and the gradients are summed over the processes: the steps are those
of one process up to float rounding (tested with 2 CPU processes; exact only without dropout and
SpecAugment, whose noise is drawn per process).

With a checkpoint path the learner's whole state (weights, gates, multipliers, both optimizers, the gate
generator, the position in the data) is saved atomically by the main process every `every` seconds, at the
end of every epoch, and when a Ctrl-C or SIGTERM arrives (the step under way finishes first). A run
restarted with `resume` continues from it and ends with the masks and weights an uninterrupted run gives
(tested bit for bit on CPU). Cost of a checkpoint: the weights and twice their size of Adam moments
(about 1.1 GB and a few seconds for wav2vec2 base).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import Interrupted
from ..specs import Checkpointing
from ..progress import bar as progress_bar

__all__ = ["CHECKPOINT_FORMAT", "SAVE_EVERY", "learn_"]
CHECKPOINT_FORMAT = "prunehead.l0-checkpoint"
SAVE_EVERY = 600.0  # seconds between checkpoints within an epoch


def learn_(learner: Any, task: Any, ws: Any, batch_size: int, epochs: int, *,
           checkpoint: Checkpointing | None = None, key: str = "", every: float = SAVE_EVERY,
           tell: Callable[[str], None] | None = None, progress: bool = False) -> int:
    """Train `learner` (in place) with `task`'s (distillation) objective for `epochs` passes over the
    workspace `ws`'s split.

    Args:
        checkpoint, key: where the state is saved and whether to continue from it, and the run's identity (a
            checkpoint with another key is refused); None: no checkpoints.

    Returns:
        the steps taken from the checkpoint (0 for a fresh run).
    """
    from ..data import make_batches
    from ..scorers.parallel import read_checkpoint, world, write_checkpoint

    rank, size = world()
    dataset, processor = ws.dataset, ws.processor
    path = checkpoint.path if checkpoint is not None else None
    device = next(learner.student.parameters()).device
    state = read_checkpoint(path, CHECKPOINT_FORMAT, key, "--method l0", map_location=device) \
        if checkpoint is not None and checkpoint.resume else None
    if state is not None:
        learner.load_state_dict(state["learner"])
    elif path is not None and rank == 0:
        path.unlink(missing_ok=True)  # starting over (the caller allowed it): no stale state to resume later
    resumed = learner.done
    steps_per_epoch = -(-dataset.num_rows // batch_size)
    saved = time.monotonic()

    def save() -> None:
        if path is not None and rank == 0:
            write_checkpoint(path, {"format": CHECKPOINT_FORMAT, "key": key, "learner": learner.state_dict()})

    with _deferred_stop() as stop:
        for epoch in range(learner.done // steps_per_epoch, epochs):
            skip = learner.done - epoch * steps_per_epoch  # steps of this epoch a resumed run has taken
            batches = make_batches(dataset, processor, batch_size, shuffle=True, seed=epoch, shard=(rank, size))
            bar = progress_bar(batches, total=steps_per_epoch, initial=skip, desc=f"l0 epoch {epoch + 1}/{epochs}",
                               enable=progress and rank == 0)
            for step, inputs in enumerate(bar):
                if step < skip:
                    continue
                weight, rows = inputs.pop("weight"), int(inputs.pop("global_size"))
                mine = list(range(rows))[rank::size] or [0]  # a stand-in row (weight 0) when none is this one's
                inputs = {k: v.to(device) for k, v in inputs.items()}
                record = learner.step(lambda m: task.objective(m(**task.model_inputs(inputs)), inputs), rows,
                                      rows=mine, weight=weight)
                bar.set_postfix(loss=f"{record['loss']:.3f}", macs=f"{record['expected_mac_fraction']:.3f}")
                if _agree(stop.requested, device):
                    save()
                    raise Interrupted(f"the mask learning is saved after step {learner.done} in {path}; "
                                      f"{checkpoint.hint}" if checkpoint is not None else
                                      f"no checkpoint was kept (step {learner.done})")
                if time.monotonic() - saved > every:
                    save()
                    saved = time.monotonic()
            bar.close()
            if tell is not None and rank == 0:
                tell(f"l0: epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, expected MACs "
                     f"{record['expected_mac_fraction']:.3f} of the dense model's (target {learner.target})")
            if epoch + 1 < epochs:
                save()
                saved = time.monotonic()
    return resumed


class _Stop:
    """Whether a Ctrl-C or SIGTERM arrived during `deferred_stop()`; `requested` is checked between steps."""

    requested: bool = False


@contextlib.contextmanager
def _deferred_stop() -> Iterator[_Stop]:
    """Let a loop finish its step on Ctrl-C (SIGINT) or SIGTERM and stop cleanly (it saves its checkpoint
    and raises); a second Ctrl-C interrupts at once. Outside the main thread nothing is deferred."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def defer(signum: int, frame: object) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.requested = True

    before = {sig: signal.signal(sig, defer) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _agree(flag: bool, device: torch.device) -> bool:
    """True in every process when any process was asked to stop (they must stop at the same step)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)  # NCCL reduces GPU tensors only
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
