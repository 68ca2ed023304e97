"""The other values the library functions take: a `Ranking` (how units are ranked), the `Data` to score and
evaluate on, and a `Recovery` fine-tune. Frozen, validated on construction, JSON round-trips.

`prunehead.prune(model, target, ranking=Ranking("hib", samples=64), data=Data("kws/"),
recover=Recovery(epochs=1))`; `score`, `sweep` and `evaluate` take the same `Data`. A plain string is
accepted wherever a `Data` is (`Data.of("kws/")`), and a score file or matrix wherever a `Ranking` is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

AUTO = "auto"  # Ranking("auto"): score with each candidate, keep the one that holds the metric best
AUTO_SCORERS = ("gradient", "attention", "occlusion", "attattr")  # the cheap ones; hib and plugins on request
VERSION = 1


def check_whole(flag: str, value: Any, least: int = 0) -> None:
    """InputError naming `flag` unless `value` is a whole number (not a bool) of at least `least`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{flag} must be a whole number of at least {least}, got {value!r}")


def check_positive(flag: str, value: Any) -> None:
    """InputError naming `flag` unless `value` is a finite number above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InputError(f"{flag} must be a positive number, got {value!r}")


def check_fraction(flag: str, value: Any, low_open: bool = False) -> None:
    """InputError naming `flag` unless `value` is a finite number within [0, 1] ((0, 1] with `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (0 < value <= 1 if low_open else 0 <= value <= 1):
        raise InputError(f"{flag} must be within {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")


@dataclass(frozen=True)
class Ranking:
    """How one unit kind is ranked: a `scorer` run on `samples` clips of the score split (with its
    `options`, seeded by `seed`), or given `scores` (a score file or an L x W matrix). With `rounds` > 1 both
    may be given: the scores rank the first round. `scorer="auto"` compares `candidates` on the selection
    split."""

    scorer: str | None = None
    scores: str | Path | torch.Tensor | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    samples: int = 200
    seed: int = 0
    candidates: tuple[str, ...] = AUTO_SCORERS

    def __post_init__(self) -> None:
        if self.scorer is None and self.scores is None:
            raise InputError("give --scores FILE, --scorer NAME with --data to score the heads here, or --plan FILE")
        check_whole("--samples", self.samples, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"--seed must be a whole number of at least 0, got {self.seed!r}")
        if self.scorer == AUTO and self.scores is not None:
            raise InputError("--scorer auto scores its candidates on --data itself: drop --scores")
        if self.scorer == AUTO and self.options:
            raise InputError("--scorer auto runs each candidate with its defaults: drop --option")
        if self.scorer == AUTO and not self.candidates:
            raise InputError("--auto-scorers is empty: name at least one scorer")

    @classmethod
    def of(cls, value: Any) -> Ranking:
        """A Ranking from a Ranking, a score file path or a score matrix."""
        return value if isinstance(value, Ranking) else cls(scores=value)

    def to_json(self) -> dict[str, Any]:
        scores = self.scores if self.scores is None or isinstance(self.scores, torch.Tensor) else str(self.scores)
        return {"version": VERSION, "scorer": self.scorer,
                "scores": "<matrix>" if isinstance(scores, torch.Tensor) else scores, "options": dict(self.options),
                "samples": self.samples, "seed": self.seed, "candidates": list(self.candidates)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ranking:
        if data.get("scores") == "<matrix>":
            raise InputError("this ranking was given as a matrix, which JSON does not hold; pass the matrix again")
        return cls(data.get("scorer"), data.get("scores"), data.get("options", {}), data.get("samples", 200),
                   data.get("seed", 0), tuple(data.get("candidates", AUTO_SCORERS)))


@dataclass(frozen=True)
class Data:
    """A data spec (see `prunehead.data`) and how it is read: the evaluated `split` (None: test; budgets
    decide on their selection split), the `score_split` scorers draw from, batches, clip length, task."""

    spec: str
    split: str | None = None
    score_split: str = "train"
    batch_size: int = 16
    clip_seconds: float | None = None
    task: str | None = None
    on_error: str = "stop"
    workers: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise InputError(f"data must be a data spec such as a folder, a manifest or fsdd-ks, got {self.spec!r}")
        check_whole("--batch-size", self.batch_size, 1)
        if self.clip_seconds is not None:
            check_positive("--clip-seconds", self.clip_seconds)
        if self.on_error not in ("stop", "skip"):
            raise InputError(f"--on-error must be stop or skip, got {self.on_error!r}")

    @classmethod
    def of(cls, value: Any, **fields: Any) -> Data | None:
        """A Data from a Data (fields replaced), a spec string or path, or None."""
        if value is None or isinstance(value, Data):
            return value if value is None or not fields else cls(**{**asdict(value), **fields})
        if not isinstance(value, (str, Path)):
            raise InputError(f"data must be a data spec such as a folder, a manifest or fsdd-ks (or a Data), got "
                             f"{type(value).__name__} {value!r}")
        return cls(str(value), **fields)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Data:
        return cls(**{k: v for k, v in data.items() if k != "version"})


@dataclass(frozen=True)
class Distill:
    """Recovery from the unpruned model as teacher (knowledge distillation, Hinton et al. 2015; hidden-layer
    matching as DPHuBERT, Peng et al. 2023). The student's per-sample loss is

        labels x task loss  +  T^2 KL(softmax(teacher / T) || softmax(student / T))  +  hidden x distance

    where the distance averages, over the `layers` map, the squared error between each student layer's output
    and its teacher layer's, divided by the teacher state's mean square (scale-free). `layers`: "all" (every
    student layer to the teacher layer it came from, by original id: the default), "last" (the last one),
    "none", or a comma list of student layer ids. Cost: one teacher forward per step (no backward)."""

    temperature: float = 2.0
    labels: float = 1.0  # weight of the task loss on the gold labels (0: without the hard labels)
    hidden: float = 1.0  # weight of the hidden-state distance (0: soft labels only)
    layers: str = "all"

    def __post_init__(self) -> None:
        check_positive("--distill-temperature", self.temperature)
        for flag, value in (("--distill-labels", self.labels), ("--distill-hidden", self.hidden)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{flag} must be a weight >= 0, got {value!r}")
        if self.layers not in ("all", "last", "none") and not all(
                part.strip().isdigit() for part in str(self.layers).split(",")):
            raise InputError(f"--distill-layers must be all, last, none or a comma list of layer ids, got "
                             f"{self.layers!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recovery:
    """What follows the cut, keeping the plan: a training-free `repair` ("bias" or "lsq",
    `prunehead.pruning.repair`, on `repair_samples` seeded samples of the score split), then a short
    fine-tune of `epochs` on the train split (label loss); `epochs` 0 with a repair: the repair alone."""

    epochs: int = 1
    lr: float = 5e-5
    seed: int = 0
    repair: str | None = None
    repair_samples: int = 64
    distill: Distill | None = None  # learn from the unpruned model too (`Distill`); None: the labels alone

    def __post_init__(self) -> None:
        check_whole("--recover-epochs", self.epochs, 0 if self.repair is not None else 1)
        if self.distill is not None and not isinstance(self.distill, Distill):
            raise InputError(f"Recovery(distill=...) takes a Distill, got {type(self.distill).__name__}")
        if self.distill is not None and self.epochs == 0:
            raise InputError("--recover-distill trains: give --recover-epochs 1 or more")
        check_positive("--recover-lr", self.lr)
        if self.repair is not None and self.repair not in ("bias", "lsq"):
            raise InputError(f"--repair must be bias or lsq, got {self.repair!r}")
        check_whole("--repair-samples", self.repair_samples, 1)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recovery:
        distill = Distill(**data["distill"]) if data.get("distill") else None
        return cls(data["epochs"], data["lr"], data.get("seed", 0), data.get("repair"), data.get("repair_samples", 64),
                   distill)


@dataclass(frozen=True)
class Checkpointing:
    """Where a run that trains to decide (`--method l0`) saves its state (`path`), whether it continues from
    there (`resume`), and the command that does (`hint`, named when the run is interrupted)."""

    path: Path
    resume: bool = False
    hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class Frontier:
    """`sweep`'s speed / accuracy frontier: every head ratio x each of `ffn_ratios` (neurons cut per layer,
    keeping `min_neurons_per_layer`, ranked by `ffn`) x each of `conv_ratios` (front-end channels cut per
    conv layer, ranked by `conv`; none: the conv front end stays) x each of `layer_ratios` (whole layers,
    ranked by `layers`), MACs on `seconds` of input, and with
    `latency` ONNX Runtime latency at `batch_sizes` (default 1, 8; median of `repeats`) timed in turns with
    the dense model."""

    ffn_ratios: tuple[float, ...]
    ffn: Ranking = field(default_factory=lambda: Ranking("taylor"))
    min_neurons_per_layer: int = 1
    latency: bool = False
    batch_sizes: tuple[int, ...] | None = None
    seconds: float = 1.0
    repeats: int = 20
    conv_ratios: tuple[float, ...] = ()
    conv: Ranking = field(default_factory=lambda: Ranking("taylor"))
    layer_ratios: tuple[float, ...] = ()  # whole encoder layers (ranked over the encoder by `layers`)
    layers: Ranking = field(default_factory=lambda: Ranking("taylor"))

    def __post_init__(self) -> None:
        if not self.ffn_ratios:
            raise InputError("--ffn-ratios is empty: give START:STOP:STEP or a comma list, e.g. 0:0.6:0.2")
        for flag, values in (("--ffn-ratios", self.ffn_ratios), ("--conv-ratios", self.conv_ratios),
                             ("--layer-ratios", self.layer_ratios)):
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0 for v in values):
                raise InputError(f"{flag}: every ratio must be within [0, 1], got {list(values)}")
        if self.batch_sizes is not None and not self.latency:
            raise InputError("--batch-sizes are the batch sizes timed with --latency: add --latency or drop "
                             "--batch-sizes")
        sizes = self.batch_sizes or (1, 8)
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
            raise InputError(f"--batch-sizes must be whole numbers of at least 1, e.g. 1,8; got {list(sizes)}")
        check_positive("--seconds", self.seconds)
        check_whole("--repeats", self.repeats, 1)
        for flag, ranking in (("--ffn-scorer", self.ffn), ("--conv-scorer", self.conv)):
            if ranking.scorer is not None and ranking.scorer not in ("taylor", "magnitude"):
                raise InputError(f"{flag} must be one of taylor, magnitude, got {ranking.scorer!r}")
        if self.layers.scorer is not None and self.layers.scorer not in ("taylor", "occlusion"):
            raise InputError(f"--layer-scorer must be one of taylor, occlusion, got {self.layers.scorer!r}")

    @property
    def sizes(self) -> list[int]:
        """The batch sizes timed (default 1, 8), each once."""
        return list(dict.fromkeys(self.batch_sizes or (1, 8)))
