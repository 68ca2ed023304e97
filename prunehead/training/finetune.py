"""Fine-tuning: train a task head (and the backbone) on a data set; checkpoints every epoch, resumable.

`finetune(model, data, out_dir, TrainConfig(...))` accepts a model directory or hub id, `arch:<name>`
(a fresh random model from `prunehead.architectures`), a Whisper directory (becomes
WhisperForAudioClassification with a cropped input window), or a pruned model (its plan is kept).
The loop itself is `prunehead.training.engine` (data-parallel under torchrun, through accelerate); the defaults
depend on where the model comes from (from scratch or a trained checkpoint: `source_defaults`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import surgery
from ..data import (CLIP_KEY, align_labels, default_feature_extractor, label_names, load_data,
                   model_label_names, spec_paths)
from ..errors import InputError, MissingSplitError, WorkKeptError
from ..portable.trust import check_custom_code
from ..output_guard import Disposable, check_output, disk_full_reported, exclusive_temp, input_overlap, publish_dir
from .engine import NonFiniteLossError, deterministic, make_engine, threads, train_  # noqa: F401 - re-exported
from ..tasks import classification_task, get_task
from ..families.whisper_window import crop_window_, window_feature_extractor
from .config import CHECKPOINT_FORMAT, TrainConfig, chance_level, chance_warning, source_defaults
from .models import char_tokenizer, freeze_feature_encoder_, load_model, load_processor, pick_device


def _latest_checkpoint(folder: Path) -> Path | None:
    files = sorted(folder.glob("epoch-*.pt"), key=lambda p: os.stat(p).st_mtime_ns)
    return files[-1] if files else None


def _save_checkpoint(folder: Path, name: str, state: dict[str, Any], keep: int = 2) -> None:
    """Tensors and plain data only (read back with `weights_only=True`); written to an exclusive temp file.

    A full disk raises DiskFullError and keeps the earlier checkpoints (the run keeps its folder for --resume).
    """
    folder.mkdir(parents=True, exist_ok=True)
    advice = "the earlier checkpoints are kept: free space and rerun with --resume"
    with disk_full_reported(folder / name, advice):
        tmp = exclusive_temp(folder, name, ".pt")
        try:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
            os.replace(tmp, folder / name)
        finally:
            tmp.unlink(missing_ok=True)
    for old in sorted(folder.glob("epoch-*.pt"), key=lambda p: os.stat(p).st_mtime_ns)[:-keep]:
        old.unlink()


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A training checkpoint, unpickled with `weights_only=True`: tensors and plain data, never code."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # the restricted unpickler refuses any other object (issue 17: code execution)
        raise InputError(f"{path} is not a prunehead training checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a prunehead training checkpoint; delete it to start over")
    return state


def _infer_data_task(dataset: Any) -> str:
    return "asr" if "text" in dataset.column_names else classification_task(label_names(dataset))


# ----------------------------------------------------------------------------------------------- output folder

def _partial(out_dir: Path) -> Path:
    """Where an unfinished run trains (checkpoints included) before it is published as `out_dir`."""
    return out_dir.parent / f".{out_dir.name}.partial"


def _has_checkpoints(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("epoch-*.pt"))


def check_out_dir(out_dir: str | Path, resume: bool, inputs: list[str | Path] = ()) -> Path:
    """Validate finetune's --out before anything loads; returns it with `~` expanded.

    Refused: the working directory (or a folder containing it), an input, a path under a regular file or
    in an unwritable folder, a non-empty folder without `resume` (with it: one without checkpoints to
    continue, which would be trained from scratch and then not published), an interrupted run without
    `resume`, and a work folder `.NAME.partial` that is, holds or lies in an input (`-d .m.partial --out m`).
    """
    out = check_output(out_dir, overwrite=True, inputs=inputs)
    partial = _partial(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out names the folder the model is saved to")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise InputError(f"{out} is not empty; pass --resume to continue its training, or choose another --out")
    if out.is_dir() and any(out.iterdir()) and not _has_checkpoints(out):
        raise InputError(f"{out} is not empty and holds no checkpoints/ to resume from; --resume would train from "
                         "scratch and could not publish over it: choose an empty or new --out")
    if out.is_dir() and not os.access(out, os.W_OK):
        raise InputError(f"cannot write to {out}; choose a writable --out")
    overlap = input_overlap(partial, inputs)
    if overlap is not None:
        raise InputError(f"{partial}, the folder this run trains in before it becomes {out}, is or holds the input "
                         f"{overlap[1]}; choose another --out")
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        raise InputError(f"{partial} is in the way (not a folder this command made); remove it")
    if _has_checkpoints(partial) and not resume:
        raise InputError(f"{partial} holds an interrupted run for {out}; pass --resume to continue it, "
                         "or delete it to start over")
    return out


def _inputs(model_spec: str, *data_specs: str | None) -> list[Path]:
    """The local paths of the model and data specs (what the output must not replace)."""
    paths = [Path(model_spec)] if Path(model_spec).exists() else []
    return paths + [p for spec in data_specs if spec for p in spec_paths(spec)]


def _open_work_dir(out: Path, resume: bool) -> tuple[Path, bool | Disposable]:
    """(the folder to train in, whether this call created it and a failure may remove it): `out` itself when
    resuming a published run, else the hidden `.NAME.partial` beside it (kept on Ctrl-C for --resume; on an
    error removed, unless the disk is full or the finished run could not be published: `Disposable`)."""
    if resume and _has_checkpoints(out):
        return out, False
    partial = _partial(out)
    if partial.is_dir() and not partial.is_symlink():
        return partial, False
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir()  # exclusive: fails on anything planted there meanwhile
    return partial, Disposable(partial)


def _write_outputs(work: Path, model: nn.Module, fe: Any, tok: Any, record: dict[str, Any]) -> None:
    """Model files and train.json, each written in a staging folder and moved into `work` by rename."""
    stage = exclusive_temp(work, "model", directory=True)
    try:
        _save_model(model, stage, fe, tok)
        (stage / "train.json").write_text(json.dumps(record, indent=2) + "\n")
        for item in stage.iterdir():
            os.replace(item, work / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish_run(work: Path, out: Path) -> None:
    """A finished run in `.NAME.partial` becomes `out` by one rename (an empty `out` folder is replaced).

    Something that appeared at `out` meanwhile is never replaced, and the finished run stays in `work`."""
    if work == out:
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
    try:
        publish_dir(work, out, overwrite=False)
    except InputError:
        raise WorkKeptError(f"{out} appeared while this run trained and is not replaced; the finished run is kept "
                            f"in {work}: move {out} away and rerun with --resume to publish it") from None


def finetune(model_spec: str, data_spec: str, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
             task: str | None = None, resume: bool = False, device: str | None = None,
             on_error: str = "stop", progress: bool = True, eval_data: str | None = None) -> dict[str, Any]:
    """Train `model_spec` on `data_spec`, save model + preprocessing + train.json in `out_dir`.

    `eval_data` (default `data_spec`) is evaluated on `cfg.eval_split` after every epoch; its labels
    are matched to the training labels by name. Unset (None) fields of `cfg` follow the model's source
    (`source_defaults`): from-scratch settings for `arch:NAME`, fine-tuning settings otherwise. Launched
    in several processes (torchrun), the run is data-parallel (`prunehead.training.engine`) and the main process
    writes.

    Returns the train.json record: epochs, wall time, device, final metrics, per-epoch history and
    `warnings` (one line when the final accuracy is at chance level).
    Cost: `epochs` passes (forward + backward) over the training split, one forward pass over the
    evaluation split per epoch.
    """
    out_dir = check_out_dir(out_dir, resume, _inputs(model_spec, data_spec, eval_data))
    if not model_spec.startswith("arch:"):
        check_custom_code(model_spec)  # before the processor loads: transformers would prompt, or fall back silently
    cfg = source_defaults(cfg, model_spec)
    engine = make_engine(pick_device(device))
    with threads(cfg.threads), deterministic(cfg.seed):
        model, objective, train, evaluation, (fe, tok) = _prepare(model_spec, data_spec, cfg, task, on_error,
                                                                  eval_data)
        task, labels = objective.name, None if objective.name == "asr" else model_label_names(model.config)
        work, created = _work_dir(engine, out_dir, resume)
        try:
            state = _resume_state(work, model) if resume else None
            save = (lambda name, snap: _save_checkpoint(work / "checkpoints", name, snap)) \
                if engine.is_main_process else None
            record = train_(model, objective, train, evaluation, (fe, tok), cfg, engine=engine, resume=state,
                            save=save, progress=progress)
            record.update(model=model_spec, data=data_spec, eval_data=eval_data or data_spec, task=task,
                          device=str(engine.device), threads=torch.get_num_threads(), config=asdict(cfg),
                          train_samples=len(train))
            _warn_at_chance(record, labels, evaluation)
            if engine.is_main_process:
                _write_outputs(work, model, fe, tok if task == "asr" else None, record)
                _publish_run(work, out_dir)
            engine.wait_for_everyone()
        except Exception:  # a failed run leaves nothing; Ctrl-C / SIGTERM keep the checkpoints for --resume
            if created:
                shutil.rmtree(work, ignore_errors=True)
            raise
    return record


def _prepare(model_spec: str, data_spec: str, cfg: TrainConfig, task: str | None, on_error: str,
             eval_data: str | None) -> tuple[nn.Module, Any, Any, Any, tuple[Any, Any]]:
    """(model, objective, train split, evaluation split or None, (feature extractor, tokenizer)), labels
    matched by name to the model's class order; the model's init draws from the seeded generators."""
    fe, tok = load_processor(model_spec)
    train = _load_split(data_spec, cfg.train_split, "--train-split", processor=fe, task=task, on_error=on_error,
                        clip_seconds=cfg.clip_seconds)
    task = task or _infer_data_task(train)
    labels = None if task == "asr" else label_names(train)
    if task == "asr" and tok is None:
        tok = char_tokenizer(list(train["text"]))
    model = load_model(model_spec, task, labels, tok)
    if labels:  # a kept head has its own class order: the data follow it, matched by name
        labels = model_label_names(model.config)
        train = align_labels(train, labels)
    fe = fe or default_feature_extractor(model.config)
    clip = cfg.clip_seconds if cfg.clip_seconds is not None else getattr(fe, CLIP_KEY, None)
    if clip and task != "asr":
        setattr(fe, CLIP_KEY, clip)  # saved with the model: eval, score, prune crop the same way
    elif hasattr(fe, CLIP_KEY):
        delattr(fe, CLIP_KEY)  # a CTC head on a keyword backbone: sentences keep their length
    if cfg.window_s is not None:
        crop_window_(model, cfg.window_s)
        fe = window_feature_extractor(fe, cfg.window_s)
    if cfg.freeze_feature_encoder:
        freeze_feature_encoder_(model)
    evaluation = None
    if cfg.eval_split:
        evaluation = _load_split(eval_data or data_spec, cfg.eval_split, "--eval-split", processor=fe, task=task,
                                 on_error=on_error, clip_seconds=cfg.clip_seconds)
        evaluation = align_labels(evaluation, labels) if labels else evaluation
    return model, get_task(task, model, tok), train, evaluation, (fe, tok)


def _work_dir(engine: Any, out: Path, resume: bool) -> tuple[Path, bool]:
    """`_open_work_dir` in the main process; the others learn its path (they never create it)."""
    work, created = _open_work_dir(out, resume) if engine.is_main_process else (None, False)
    if engine.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        work = Path(broadcast_object_list([str(work) if work else None], from_process=0)[0])
    return work, created


def _resume_state(work: Path, model: nn.Module) -> dict[str, Any] | None:
    """The newest checkpoint in `work` (None without one), refused when trained with other labels."""
    latest = _latest_checkpoint(work / "checkpoints")
    if latest is None:
        return None
    state = load_checkpoint(latest)
    if state["labels"] != model.config.id2label:
        raise InputError(f"{latest} was trained with other labels; resume with the same data")
    return state


def fit_(model: nn.Module, data_spec: str, cfg: TrainConfig, *, source: str | None = None, task: str | None = None,
         device: str | None = None, on_error: str = "stop", progress: bool = False, teacher: nn.Module | None = None,
         distill: Any = None) -> dict[str, Any]:
    """Train a loaded `model` in place on `cfg.train_split` of `data_spec` (recovery after pruning), no
    evaluation and nothing written; `source` is the folder whose feature extractor / tokenizer it uses. With
    `teacher` and `distill` (a `prunehead.specs.Distill`) the loss learns from the teacher too
    (`prunehead.training.distill`).

    Unset fields of `cfg` take the fine-tuning defaults (fixed front end, no augmentation). Data-parallel
    under torchrun like `finetune`. Cost: `cfg.epochs` passes (forward + backward) over the split.
    """
    cfg = source_defaults(cfg, source or "pretrained")
    if source:
        check_custom_code(source)
    fe, tok = load_processor(source) if source else (None, None)
    fe = fe or default_feature_extractor(model.config)
    engine = make_engine(pick_device(device))
    with threads(cfg.threads), deterministic(cfg.seed):
        train = _load_split(data_spec, cfg.train_split, "--train-split", processor=fe, task=task,
                            on_error=on_error, clip_seconds=cfg.clip_seconds)
        task = task or _infer_data_task(train)
        if task != "asr":
            train = align_labels(train, model_label_names(model.config))
        if cfg.freeze_feature_encoder:
            freeze_feature_encoder_(model)
        objective = get_task(task, model, tok)
        if teacher is not None and distill is not None:
            from .distill import DistillTask

            objective = DistillTask(objective, teacher.to(engine.device), distill, model)
        record = train_(model, objective, train, None, (fe, tok), cfg, engine=engine, progress=progress)
    extra = {"distill": {**distill.to_json(), "pairs": objective.pairs}} if teacher is not None and distill else {}
    return {**record, "device": str(engine.device), "train_samples": len(train), "config": asdict(cfg), **extra}


def _load_split(spec: str, split: str, option: str, **how: Any) -> Any:
    """`load_data(spec, split, **how)`; a missing split is reported against `option`, the flag that chose it."""
    try:
        return load_data(spec, split, **how)
    except MissingSplitError as err:
        raise err.for_option(option) from None


def _warn_at_chance(record: dict[str, Any], labels: list[str] | None, evaluation: Any) -> None:
    """Add `record["warnings"]` (and warn) when the final evaluation is at chance level."""
    eval_labels = list(evaluation["label"]) if labels and evaluation is not None else None
    message = chance_warning(record["final"], chance_level(record["final"], labels, eval_labels))
    record["warnings"] = [message] if message else []
    if message:
        warnings.warn(message, stacklevel=3)


def _save_model(model: nn.Module, out_dir: Path, fe: Any, tok: Any) -> None:
    """Weights + config (+ pruning plan) via prunehead.surgery, then the feature extractor / tokenizer."""
    model.to("cpu")
    surgery.save_pretrained(model, out_dir)
    fe.save_pretrained(out_dir)
    if tok is not None:
        tok.save_pretrained(out_dir)


