"""Recipes: TOML files of plain typed data (model, data, task, training and scoring hyperparameters).

`load_recipe("recipes/whisper-tiny-fsdd-ks.toml")` returns a frozen `Recipe`. Unknown keys and wrong
types are errors naming the file and key. Relative paths are resolved against the recipe's folder.
HIB settings default to the paper's Table 1 for the recipe's task (Appendix C).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import BUILTIN_SETS
from .errors import InputError, check_finite
from .tasks import TASKS
from .training.finetune import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the `tomli` package (a dependency there)
    import tomli as tomllib

VERSION = 2  # 2: [score] `method` -> `scorer`, `lam` -> `noise` (CHANGELOG 0.2.0)


@dataclass(frozen=True)
class ModelSection:
    """`path`: model folder, hub id or arch:NAME."""

    path: str


@dataclass(frozen=True)
class DataSection:
    """`spec`: any data spec `load_data` accepts; `eval_spec`: evaluation data (default: `spec`);
    `score_split`: the split head scorers draw their samples from."""

    spec: str
    eval_spec: str | None = None
    score_split: str = "train"


@dataclass(frozen=True)
class ScoreSection:
    """Head-scoring settings (HIB defaults from the paper's Table 1 for the task)."""

    scorer: str = "hib"
    beta: float | None = None
    steps: int | None = None
    noise: float = 0.9
    lr: float = 0.1
    samples: int = 200
    init_std: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    """One benchmark model: what to train on what, and how to score its heads."""

    version: int
    name: str
    task: str
    model: ModelSection
    data: DataSection
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreSection = field(default_factory=ScoreSection)


def _types(hint: Any) -> tuple[type, ...]:
    return tuple(t for t in (typing.get_args(hint) or (hint,)) if isinstance(t, type))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` if it fits the annotation `hint` (an int where a float goes becomes a float)."""
    types = _types(hint)
    if isinstance(value, bool):
        ok = bool in types
    elif isinstance(value, int) and float in types and int not in types:
        value, ok = float(value), True
    else:
        ok = isinstance(value, types)
    if not ok:
        raise InputError(f"{where}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """`cls(**values)`; unknown keys, missing keys and wrong types are errors naming `where` and the key."""
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in hints]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(hints))}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
    coerced = {k: _coerce(v, hints[k], f"{where} {k}") for k, v in values.items()}
    for key, value in coerced.items():
        if isinstance(value, float):
            check_finite(f"{where} {key}", value)
    try:
        return cls(**coerced)
    except InputError as err:  # range checks of the section's own class (e.g. TrainConfig)
        raise InputError(f"{where}: {err}") from None


def _resolve(value: str, base: Path) -> str:
    """Paths relative to the recipe (`./x`, `../x`, or existing beside it) become absolute; names stay."""
    parts = []
    for part in value.split("+"):
        kind, sep, rest = part.partition(":")
        target = rest if sep and kind in BUILTIN_SETS else part
        if target and not Path(target).is_absolute() and (target.startswith(".") or (base / target).exists()):
            resolved = str((base / target).resolve())
            part = f"{kind}:{resolved}" if target is rest and sep else resolved
        parts.append(part)
    return "+".join(parts)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"recipe {path} not found; see recipes/ for the shipped ones") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"recipe {path} is not valid TOML: {err}") from None
    if raw.get("version") == 1:
        raise InputError(f"{path}: version 1 recipes name [score] keys `method` and `lam`; rename them `scorer` "
                         f"and `noise` and set version = {VERSION}")
    if raw.get("version") != VERSION:
        raise InputError(f"{path}: version must be {VERSION}, not {raw.get('version')!r}")
    if raw.get("task") not in TASKS:
        raise InputError(f"{path}: task must be one of {', '.join(TASKS)}, not {raw.get('task')!r}")
    sections = {"model": ModelSection, "data": DataSection, "train": TrainConfig, "score": ScoreSection}
    for key in raw:
        if key not in ("version", "name", "task", *sections):
            raise InputError(f"{path}: unknown key {key!r}; valid keys: version, name, task, {', '.join(sections)}")
    built = {k: _build(cls, raw.get(k, {}), f"{path} [{k}]") for k, cls in sections.items()}
    built["model"] = ModelSection(_resolve(built["model"].path, path.parent))
    data = built["data"]
    built["data"] = dataclasses.replace(data, spec=_resolve(data.spec, path.parent),
                                        eval_spec=data.eval_spec and _resolve(data.eval_spec, path.parent))
    if built["score"].scorer == "hib":  # the paper's Table 1 for the task, from the scorer's own table
        from .scorers.hib import TABLE1

        hib = {k: v for k, v in TABLE1[raw["task"]].items() if getattr(built["score"], k) is None}
        built["score"] = dataclasses.replace(built["score"], **hib)
    return Recipe(version=VERSION, name=str(raw.get("name", path.stem)), task=raw["task"], **built)
