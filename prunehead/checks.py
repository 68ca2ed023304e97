"""Checks of a model handed to prunehead: a loaded module, weights present (not on the meta device) and,
before it is evaluated or scored, finite; and its train / eval mode given back as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from itertools import chain

import torch
from torch import nn

from .errors import InputError


def _name(model: nn.Module) -> str:
    where = getattr(getattr(model, "config", None), "_name_or_path", "")
    return f"the model {where}" if where else "the model"


def check_model(model: object, finite: bool = False, meta_ok: bool = False) -> nn.Module:
    """`model` if it is a torch module with real weights (and, with `finite`, no NaN or inf in them).

    `meta_ok`: accept weights on the meta device (scorers run such models for shape checks: the CPU test
    suite's stand-in for a GPU); their values are not checked.

    Raises:
        InputError: not a module; weights on the meta device (never loaded); non-finite weights (`finite`).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected a model (a folder, hub id or torch.nn.Module), got {type(model).__name__} "
                         f"{str(model)[:40]!r}")
    tensors = list(chain(model.named_parameters(), model.named_buffers()))
    meta = [name for name, t in tensors if t.device.type == "meta"]
    if meta and not meta_ok:
        raise InputError(f"{_name(model)} has {len(meta)} weight tensors on the meta device (e.g. {meta[0]}): they "
                         "were never loaded; load the weights (prunehead.load(folder)) before using it")
    if finite:
        bad = [name for name, t in tensors if t.is_floating_point() and t.device.type != "meta"
               and not bool(torch.isfinite(t).all())]
        if bad:
            raise InputError(f"{_name(model)} has NaN or infinite weights in {len(bad)} tensor(s) (e.g. {bad[0]}); "
                             "it cannot be evaluated or scored: retrain it or load an intact copy")
    return model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block; every submodule's train / eval mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for module, mode in modes:
            module.training = mode
