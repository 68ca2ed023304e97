"""Pruning targets as values: what `prunehead.prune(model, target)` aims for, exactly one per call.

* `Cut`: a share of each unit kind (`Amount`: a ratio globally or per layer, or a count per layer), heads
  optionally reached in rounds (re-scored before each);
* `AccuracyBudget`: as many units as the metric on a selection split allows (`max_drop`);
* `MacBudget`: the cheapest units (importance per MAC) until the model has at most `fraction` of the dense
  model's MACs;
* `LearnedBudget`: masks learned with the weights under a MAC budget (`--method l0`);
* `SavedPlan`: a plan decided before (plan.json).

Each validates its own fields (errors name the CLI flag) and round-trips through JSON with a version:
`target_from_json(t.to_json()) == t`. A new target is a frozen dataclass here (or anywhere), its JSON
kind in `TARGETS`, and a decider registered with `prunehead.api.pruner.decider`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError
from ..specs import Distill, check_fraction, check_whole
from ..units.base import Amount
from .plan import PruningPlan

FORMAT = "prunehead.target"
VERSION = 1
SCOPES = ("global", "per_layer")
FLOORS = {"heads": 0, "ffn": 1, "conv": 1, "layers": 0}  # default: units a layer keeps at least, per kind
FLAGS = {"heads": ("--ratio", "--heads", "--min-heads-per-layer"),
         "ffn": ("--ffn-ratio", "--ffn-count", "--min-neurons-per-layer"),
         "conv": ("--conv-ratio", "--conv-count", "--min-channels-per-layer"),
         "layers": ("--layer-ratio", "--layer-count", "the layer floor")}


def check_amount(kind: str, amount: Amount) -> None:
    """InputError naming the flag for an amount of `kind` that cannot work."""
    ratio_flag, count_flag, floor_flag = FLAGS.get(kind, (f"{kind} ratio", f"{kind} count", f"{kind} floor"))
    if (amount.ratio is None) == (amount.count is None):
        raise InputError(f"give exactly one of {ratio_flag} or {count_flag}")
    if amount.ratio is not None:
        check_fraction(ratio_flag, amount.ratio)
    if amount.count is not None:
        check_whole(count_flag, amount.count)
        if amount.scope != "per_layer":
            raise InputError(f"{count_flag} removes K units in every layer; use it with --per-layer, or use {ratio_flag}")
    if amount.scope not in SCOPES:
        raise InputError(f"scope must be 'global' or 'per_layer', not {amount.scope!r}")
    check_whole(floor_flag, amount.min_per_layer)


def _floors(floors: Mapping[str, int]) -> dict[str, int]:
    out = {**FLOORS, **floors}
    for kind, floor in out.items():
        check_whole(FLAGS.get(kind, ("", "", f"the {kind} floor"))[2], floor)
    return out


@dataclass(frozen=True)
class Cut:
    """Remove `amounts[kind]` of each named kind; heads in `rounds` rounds (re-scored before each)."""

    amounts: Mapping[str, Amount]
    rounds: int = 1
    kind: ClassVar[str] = "cut"

    def __post_init__(self) -> None:
        if not self.amounts:
            raise InputError("give exactly one of --ratio, --heads, --max-drop, --target-macs or --plan")
        for kind, amount in self.amounts.items():
            check_amount(kind, amount)
        check_whole("--rounds", self.rounds, 1)
        if self.rounds > 1 and "heads" not in self.amounts:
            raise InputError("--rounds re-scores the heads between rounds: give --ratio or --heads")

    @classmethod
    def heads(cls, ratio: float | None = None, *, count: int | None = None, scope: str = "global",
              min_per_layer: int = 0, rounds: int = 1) -> Cut:
        """A cut of the heads alone: `Cut.heads(0.4)`, `Cut.heads(count=2, scope="per_layer")`."""
        return cls({"heads": Amount(ratio, count, scope, min_per_layer)}, rounds)

    def to_json(self) -> dict[str, Any]:
        return {"amounts": {k: asdict(a) for k, a in self.amounts.items()}, "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cut:
        return cls({k: Amount(**a) for k, a in data["amounts"].items()}, data.get("rounds", 1))


@dataclass(frozen=True)
class AccuracyBudget:
    """Remove as many units of `units` as possible while the selection metric drops by at most `max_drop`
    (heads alone by `scope`; several kinds in one order, cheapest per MAC first)."""

    max_drop: float
    units: tuple[str, ...] = ("heads",)
    scope: str = "global"
    min_per_layer: Mapping[str, int] = field(default_factory=dict)
    kind: ClassVar[str] = "accuracy_budget"

    def __post_init__(self) -> None:
        check_fraction("--max-drop", self.max_drop)
        if not self.units or len(set(self.units)) != len(self.units):
            raise InputError(f"--units needs distinct unit kinds, got {self.units!r}")
        if self.scope not in SCOPES:
            raise InputError(f"scope must be 'global' or 'per_layer', not {self.scope!r}")
        if self.units != ("heads",) and self.scope == "per_layer":
            raise InputError(f"--units {','.join(self.units)} ranks its units in one order across layers: drop "
                             "--per-layer")
        object.__setattr__(self, "min_per_layer", _floors(self.min_per_layer))

    def to_json(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "units": list(self.units), "scope": self.scope,
                "min_per_layer": dict(self.min_per_layer)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccuracyBudget:
        return cls(data["max_drop"], tuple(data.get("units", ("heads",))), data.get("scope", "global"),
                   data.get("min_per_layer", {}))


@dataclass(frozen=True)
class MacBudget:
    """Remove units of `units` (heads always among them), cheapest per MAC first, until the model has at most
    `fraction` of the dense model's MACs (on 1 s of audio)."""

    fraction: float
    min_per_layer: Mapping[str, int] = field(default_factory=dict)
    units: tuple[str, ...] = ("heads", "ffn")
    kind: ClassVar[str] = "mac_budget"

    def __post_init__(self) -> None:
        check_fraction("--target-macs", self.fraction, low_open=True)
        if "heads" not in self.units or len(set(self.units)) != len(self.units):
            raise InputError(f"--target-macs needs distinct unit kinds with heads among them, got {self.units!r}")
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "min_per_layer", _floors(self.min_per_layer))

    def to_json(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "min_per_layer": dict(self.min_per_layer), "units": list(self.units)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MacBudget:
        return cls(data["fraction"], data.get("min_per_layer", {}), tuple(data.get("units", ("heads", "ffn"))))


@dataclass(frozen=True)
class LearnedBudget:
    """Learn which units of `units` go (hard concrete masks trained with the weights, distilling from the
    unpruned model by `distill`, a Lagrangian holding the expected MACs at `fraction` of the dense model's),
    for `epochs` passes over the train split; `lr` for the weights, `gate_lr` for the gates (the multiplier
    is a PI controller of the MAC gap, `learned.KP` and `learned.KI`; `prunehead.pruning.learned`)."""

    fraction: float
    units: tuple[str, ...] = ("heads", "ffn")
    epochs: int = 1
    lr: float = 1e-4
    gate_lr: float = 0.1
    distill: Distill = field(default_factory=Distill)
    kind: ClassVar[str] = "learned_budget"

    def __post_init__(self) -> None:
        check_fraction("--target-macs", self.fraction, low_open=True)
        if not self.units or len(set(self.units)) != len(self.units):
            raise InputError(f"--method l0 needs distinct unit kinds, got {self.units!r}")
        object.__setattr__(self, "units", tuple(self.units))
        check_whole("--l0-epochs", self.epochs, 1)
        for flag, value in (("--l0-lr", self.lr), ("--l0-gate-lr", self.gate_lr)):
            check_fraction(flag, value, low_open=True)
        if not isinstance(self.distill, Distill):
            raise InputError(f"LearnedBudget(distill=...) takes a Distill, got {type(self.distill).__name__}")

    def to_json(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "units": list(self.units), "epochs": self.epochs, "lr": self.lr,
                "gate_lr": self.gate_lr, "distill": self.distill.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LearnedBudget:
        return cls(data["fraction"], tuple(data.get("units", ("heads", "ffn"))), data.get("epochs", 1),
                   data.get("lr", 1e-4), data.get("gate_lr", 0.1), Distill(**data.get("distill", {})))


@dataclass(frozen=True)
class SavedPlan:
    """Apply a plan decided before, as it is (`source`: the plan.json it came from, if any)."""

    plan: PruningPlan
    source: str | None = None
    kind: ClassVar[str] = "saved_plan"

    def __post_init__(self) -> None:
        if not isinstance(self.plan, PruningPlan):
            raise InputError(f"SavedPlan needs a PruningPlan, got {type(self.plan).__name__}; "
                             "use SavedPlan.load(path) for a plan.json")

    @classmethod
    def load(cls, path: str | Path) -> SavedPlan:
        return cls(PruningPlan.load(path), str(path))

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan.to_json(), "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SavedPlan:
        return cls(PruningPlan.from_json(data["plan"], data.get("source") or "plan"), data.get("source"))


Target = Cut | AccuracyBudget | MacBudget | LearnedBudget | SavedPlan
TARGETS: dict[str, type] = {t.kind: t for t in (Cut, AccuracyBudget, MacBudget, LearnedBudget, SavedPlan)}


def target_json(target: Any) -> dict[str, Any]:
    """The versioned JSON of a target (report.json's "target"); a target of another module without
    `kind` / `to_json` is recorded by its class name and dataclass fields."""
    kind = getattr(target, "kind", type(target).__name__)
    body = target.to_json() if hasattr(target, "to_json") else \
        asdict(target) if is_dataclass(target) else {"repr": repr(target)}
    return {"format": FORMAT, "version": VERSION, "kind": kind, **body}


def target_from_json(data: dict[str, Any]) -> Any:
    """The target a `target_json` dict describes; InputError for another format, version or kind."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a prunehead target (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise InputError(f"target version {data.get('version')!r}; this prunehead reads version {VERSION}")
    if data.get("kind") not in TARGETS:
        raise InputError(f"unknown target kind {data.get('kind')!r}; one of: {', '.join(TARGETS)}")
    body = {k: v for k, v in data.items() if k not in ("format", "version", "kind")}
    return TARGETS[data["kind"]].from_json(body)
