"""Recipes: TOML files of plain typed data (model, data, task, training and scoring hyperparameters, and
what to prune for).

`load_recipe("recipes/whisper-tiny-fsdd-ks.toml")` returns a frozen `Recipe`. Unknown keys and wrong
types are errors naming the file and key. Relative paths are resolved against the recipe's folder.
HIB settings default to the paper's Table 1 for the recipe's task (Appendix C). An optional `[prune]`
table is a pruning target (`prunehead.pruning.targets`) in its JSON form without "format" and "version":

    [prune]
    kind = "cut"                      # or "accuracy_budget" (max_drop = 0.01), "mac_budget" (fraction = 0.6)
    amounts.heads = { ratio = 0.4 }   # a cut: per unit kind, ratio or count, scope, min_per_layer
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
from .training.config import TrainConfig

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
    prune: Any = None  # a target (`Cut`, `AccuracyBudget`, `MacBudget`), from the [prune] table

    def ranking(self) -> Any:
        """The heads' `Ranking` of the [score] table (HIB: with its settings as options)."""
        from .specs import Ranking

        options = {} if self.score.scorer != "hib" else {
            k: getattr(self.score, k) for k in ("beta", "steps", "noise", "lr", "init_std")
            if getattr(self.score, k) is not None}
        return Ranking(self.score.scorer, options=options, samples=self.score.samples, seed=self.score.seed)


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
        if key not in ("version", "name", "task", "prune", *sections):
            raise InputError(f"{path}: unknown key {key!r}; valid keys: version, name, task, "
                             f"{', '.join(sections)}, prune")
    built = {k: _build(cls, raw.get(k, {}), f"{path} [{k}]") for k, cls in sections.items()}
    built["model"] = ModelSection(_resolve(built["model"].path, path.parent))
    data = built["data"]
    built["data"] = dataclasses.replace(data, spec=_resolve(data.spec, path.parent),
                                        eval_spec=data.eval_spec and _resolve(data.eval_spec, path.parent))
    if built["score"].scorer == "hib":  # the paper's Table 1 for the task, from the scorer's own table
        from .scorers.hib import TABLE1

        hib = {k: v for k, v in TABLE1[raw["task"]].items() if getattr(built["score"], k) is None}
        built["score"] = dataclasses.replace(built["score"], **hib)
    return Recipe(version=VERSION, name=str(raw.get("name", path.stem)), task=raw["task"],
                  prune=_target(raw.get("prune"), path), **built)


def _target(table: dict[str, Any] | None, path: Path) -> Any:
    """The target of a [prune] table (None without one); errors name the recipe."""
    if table is None:
        return None
    from .pruning.targets import FORMAT, TARGETS, target_from_json
    from .pruning.targets import VERSION as TARGET_VERSION

    if not isinstance(table, dict) or table.get("kind") not in TARGETS or table.get("kind") == "saved_plan":
        kinds = ", ".join(k for k in TARGETS if k != "saved_plan")
        raise InputError(f"{path} [prune]: kind must be one of {kinds}, not {table.get('kind')!r}")
    try:
        return target_from_json({"format": FORMAT, "version": TARGET_VERSION, **table})
    except InputError as err:
        raise InputError(f"{path} [prune]: {err}") from None
    except (KeyError, TypeError) as err:
        raise InputError(f"{path} [prune]: the {table['kind']} target needs the key {err}; see "
                         "prunehead.pruning.targets") from None
