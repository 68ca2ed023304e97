"""Scorer registry: the built-ins plus any scorer a package adds under the entry-point group
`prunehead.scorers` (`[project.entry-points."prunehead.scorers"] myscore = "mypkg.mod:MyScorer"`)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from ..errors import InputError
from .base import Scorer

ENTRY_POINT_GROUP = "prunehead.scorers"

BUILTINS: dict[str, str] = {
    "hib": "prunehead.scorers.hib:HIBScorer",
    "attattr": "prunehead.scorers.attattr:AttAttrScorer",
    "gradient": "prunehead.scorers.gradient:GradientScorer",
    "occlusion": "prunehead.scorers.occlusion:OcclusionScorer",
    "attention": "prunehead.scorers.attention:AttentionScorer",
    "random": "prunehead.scorers.random:RandomScorer",
    "l0": "prunehead.scorers.l0:L0Scorer",
}


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTINS}


def available() -> list[str]:
    """Names of every scorer: built-ins first, then plugins."""
    return [*BUILTINS, *sorted(_plugins())]


def scorer_class(name: str) -> type[Scorer]:
    """The class registered as `name`; InputError listing the valid names otherwise."""
    if name in BUILTINS:
        module, attr = BUILTINS[name].split(":")
        return getattr(importlib.import_module(module), attr)
    plugins = _plugins()
    if name not in plugins:
        raise InputError(f"unknown scorer {name!r}; choose one of: {', '.join(available())}")
    cls = plugins[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise InputError(f"entry point {name!r} in group {ENTRY_POINT_GROUP} is not a prunehead Scorer subclass")
    return cls


def option_names(name: str) -> list[str]:
    """The settings of scorer `name` (its recorded parameters; objects such as HIB's `stats` are extra)."""
    return [f.name for f in dataclasses.fields(scorer_class(name)) if f.init and f.repr]


def get_scorer(name: str, task: str | None = None, **params: Any) -> Scorer:
    """An instance of scorer `name` with `params`; InputError for unknown names, parameters or values.

    `task` (ks, sid, ic, asr) fills the parameters not given from the scorer's per-task defaults
    (HIB: the paper's Table 1), the one table the library and the CLI share.
    """
    cls = scorer_class(name)
    params = {**cls.task_defaults.get(task or "", {}), **params}
    accepted = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InputError(f"scorer {name!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(option_names(name)) or '(none)'}")
    return cls(**params)


def build_scorer(name: str, options: Mapping[str, Any] | None = None, *, task: str | None = None,
                 seed: int = 0) -> Scorer:
    """Scorer `name` with `options`; HIB gets the paper's per-task defaults, seeded scorers `seed`.

    Cheap: call it before loading anything to validate the options.
    """
    params = dict(options or {})
    if "seed" in option_names(name):
        params.setdefault("seed", seed)
    return get_scorer(name, task=task, **params)
