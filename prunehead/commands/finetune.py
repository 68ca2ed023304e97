"""`prunehead finetune`: train a task head (and backbone) on a data set; recipe values, then flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import ClipSeconds, Device, Positive, OnError, OnErrorChoice, Task

Opt = typer.Option


def finetune_cmd(
    out: Annotated[Path, Opt("--out", "-o", help="Output folder: model, checkpoints/, train.json.")],
    model: Annotated[str | None, Opt("--model", "-m", help="Model folder, hub id, Whisper folder, or "
                                                              "arch:NAME for a fresh model (e.g. arch:wav2vec2-12x12).")] = None,
    data: Annotated[str | None, Opt("--data", "-d", help="Data spec (see `prunehead eval --help`).")] = None,
    eval_data: Annotated[str | None, Opt(help="Data evaluated after each epoch (default: --data).")] = None,
    recipe: Annotated[Path | None, Opt(help="TOML recipe; flags given here override its values.")] = None,
    task: Task = None,
    epochs: Annotated[int | None, Opt(min=1, help="Passes over the training split.")] = None,
    lr: Annotated[float | None, Opt(callback=Positive, help="Backbone learning rate.")] = None,
    head_lr: Annotated[float | None, Opt(callback=Positive, help="Task-head learning rate.")] = None,
    batch_size: Annotated[int | None, Opt(min=1, help="Utterances per training step.")] = None,
    freeze_feature_encoder: Annotated[bool | None, Opt("--freeze-feature-encoder/--train-feature-encoder",
                                                       help="Keep the convolutional front end fixed.")] = None,
    seed: Annotated[int | None, Opt(min=0, help="Seed for the head and the data order.")] = None,
    warmup: Annotated[float | None, Opt(min=0.0, max=1.0, show_default=False,
                                        help="Fraction of the steps with a linearly rising learning rate. "
                                             "[default: 0.1]")] = None,
    max_seconds: Annotated[float | None, Opt(help="Stop after this wall time (checkpointed; --resume goes on).")] = None,
    window_s: Annotated[float | None, Opt(help="Whisper: crop the input window to this many seconds.")] = None,
    clip_seconds: ClipSeconds = None,
    train_split: Annotated[str | None, Opt(help="Split to train on.")] = None,
    eval_split: Annotated[str | None, Opt(help="Split evaluated after each epoch ('none' to skip).")] = None,
    augment: Annotated[bool | None, Opt("--augment/--no-augment", show_default=False,
                                        help="Perturb training clips (speed, shift, gain, noise). [default: on for "
                                             "arch: models, off for trained checkpoints]")] = None,
    threads: Annotated[int | None, Opt(min=1, show_default=False,
                                       help="CPU threads for training: a fixed count, so that a run repeats "
                                            "exactly. [default: 1]")] = None,
    resume: Annotated[bool, Opt(help="Continue from the latest checkpoint in --out.")] = False,
    device: Device = None, on_error: OnError = OnErrorChoice.stop,
) -> None:
    """Fine-tune a model on a data set; a pruned model keeps its pruning plan."""
    from dataclasses import replace

    from ..api import finetune
    from ..errors import InputError
    from ..recipe import load_recipe
    from ..training.config import TrainConfig

    out = out.expanduser()
    base = load_recipe(recipe) if recipe else None
    flags = dict(epochs=epochs, lr=lr, head_lr=head_lr, batch_size=batch_size, seed=seed, warmup=warmup,
                 max_seconds=max_seconds,
                 freeze_feature_encoder=freeze_feature_encoder, window_s=window_s, clip_seconds=clip_seconds,
                 train_split=train_split, eval_split=eval_split, augment=augment, threads=threads)
    cfg = replace(base.train if base else TrainConfig(), **{k: v for k, v in flags.items() if v is not None})
    if cfg.eval_split == "none":
        cfg = replace(cfg, eval_split=None)
    model = model or (base.model.path if base else None)
    data = data or (base.data.spec if base else None)
    eval_data = eval_data or (base.data.eval_spec if base else None)
    task = task.value if task else (base.task if base else None)
    if model is None or data is None:
        raise InputError("give --model and --data, or a --recipe that names them")
    record = finetune(model, data, out, cfg, task=task, resume=resume, device=device, on_error=on_error.value,
                      eval_data=eval_data, progress=True)
    from ..training.engine import is_main_process

    if not is_main_process():  # data-parallel run: rank 0 reports
        return
    final = ", ".join(f"{k} {v:.4f}" for k, v in record["final"].items() if isinstance(v, float))
    processes = f" x {record['processes']} processes" if record.get("processes", 1) > 1 else ""
    typer.echo(f"trained {record['epochs']} epoch(s) in {record['wall_seconds']} s on {record['device']}{processes}; "
               f"{final}")
    typer.echo(f"wrote {out}")
