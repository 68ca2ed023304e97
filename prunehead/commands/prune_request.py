"""`prunehead prune`'s flags -> the library's values: exactly one target (`--ratio` / `--heads` /
`--ffn-ratio`, `--max-drop`, `--target-macs` or `--plan`), the rankings, the data and the recovery.

The one place that knows which flags go together; every message names the flags to add or drop. Nothing is
loaded here, so a bad combination fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pruning.targets import AccuracyBudget, Cut, MacBudget, SavedPlan
from ..specs import AUTO, AUTO_SCORERS, Data, Ranking, Recovery
from ..units.base import Amount

DEFAULTS: dict[str, Any] = {
    "scores": None, "plan": None, "ratio": None, "heads": None, "scope": None, "min_heads_per_layer": 0,
    "rounds": 1, "scorer": None, "data": None, "samples": 200, "score_split": "train", "seed": 0, "split": None,
    "batch_size": 16, "task": None, "clip_seconds": None, "recover_epochs": 0, "recover_lr": 5e-5,
    "dry_run": False, "options": None, "max_drop": None, "auto_scorers": AUTO_SCORERS, "ffn_ratio": None,
    "ffn_scores": None, "ffn_scorer": "taylor", "ffn_scope": "per_layer", "min_neurons_per_layer": 1,
    "target_macs": None, "units": "heads", "target": None,
}
TARGET_FLAGS = ("ratio", "heads", "max_drop", "target_macs", "plan", "ffn_ratio")
UNITS = {"heads": ("heads",), "ffn": ("ffn",), "both": ("heads", "ffn")}


@dataclass(frozen=True)
class PruneRequest:
    """The values `prunehead.prune(model, target, ranking=..., data=..., recover=...)` takes."""

    target: Any
    ranking: dict[str, Ranking]
    data: Data | None
    recover: Recovery | None


def request_from_flags(flags: dict[str, Any]) -> PruneRequest:
    """The values for `flags` (the prune command's option names; missing ones take their defaults). `target`
    (a recipe's [prune] target) applies when no target flag is given."""
    unknown = set(flags) - set(DEFAULTS)
    if unknown:
        raise InputError(f"unknown prune options {sorted(unknown)}")
    f = {**DEFAULTS, **flags}
    _check_common(f)
    if f["target"] is not None and all(f[k] is None for k in TARGET_FLAGS):  # a recipe's [prune], unless flags say
        target = f["target"]
    elif f["target_macs"] is not None:
        target = _macs(f)
    elif f["max_drop"] is not None:
        target = _budget(f)
    elif f["plan"] is not None:
        target = _plan(f)
    else:
        target = _cut(f)
    data = Data(str(f["data"]), split=f["split"], score_split=f["score_split"], batch_size=f["batch_size"],
                clip_seconds=f["clip_seconds"], task=f["task"]) if f["data"] is not None else None
    recover = Recovery(f["recover_epochs"], f["recover_lr"], f["seed"]) if f["recover_epochs"] else None
    rankings = _rankings(f, target)
    _check_scorers(rankings.get("heads"))
    return PruneRequest(target, rankings, data, recover)


def _check_scorers(ranking: Ranking | None) -> None:
    """Unknown scorers and bad scorer options fail here, before anything loads."""
    from ..scorers.registry import build_scorer

    if ranking is None or ranking.scorer is None:
        return
    for name in ranking.candidates if ranking.scorer == AUTO else [ranking.scorer]:
        build_scorer(name, ranking.options if ranking.scorer != AUTO else None, seed=ranking.seed)


def _check_common(f: dict[str, Any]) -> None:
    if f["units"] not in UNITS:
        raise InputError(f"--units must be one of {', '.join(UNITS)}, got {f['units']!r}")
    if f["ffn_scorer"] not in ("taylor", "magnitude"):
        raise InputError(f"--ffn-scorer must be one of taylor, magnitude, got {f['ffn_scorer']!r}")
    if f["recover_epochs"] < 0 or not f["recover_lr"] > 0:
        raise InputError("--recover-epochs must be >= 0 and --recover-lr > 0")
    if f["recover_epochs"] and f["data"] is None:
        raise InputError("--recover-epochs fine-tunes on the train split of --data: give --data")
    if f["dry_run"] and (f["recover_epochs"] or f["rounds"] > 1):
        raise InputError("--dry-run only decides the plan (no surgery): drop --recover-epochs and --rounds")
    if f["scorer"] is not None and f["data"] is None and f["units"] != "ffn":
        raise InputError(f"--scorer {f['scorer']} scores the heads on data: give --data")
    if f["scorer"] == AUTO and (f["scores"] is not None or f["rounds"] > 1):
        raise InputError("--scorer auto scores and compares rankings on --data: give --data, drop --scores "
                         "and --rounds")
    if f["scorer"] == AUTO and f["options"]:
        raise InputError("--scorer auto runs each candidate with its defaults: drop --option")
    if f["ffn_scores"] is not None and f["ffn_ratio"] is None and f["units"] == "heads" and f["target_macs"] is None:
        raise InputError("--ffn-scores ranks FFN neurons for --ffn-ratio: give --ffn-ratio (or --max-drop with "
                         "--units both)")


def _macs(f: dict[str, Any]) -> MacBudget:
    if any(f[k] is not None for k in ("plan", "ratio", "heads", "ffn_ratio", "max_drop")) or f["rounds"] > 1:
        raise InputError("--target-macs chooses the heads and neurons itself: drop --plan, --ratio, --heads, "
                         "--ffn-ratio, --max-drop and --rounds")
    if f["scores"] is None and f["scorer"] is None:
        raise InputError("--target-macs ranks heads too: give --scores FILE or --scorer NAME with --data")
    if (f["scorer"] is not None or f["ffn_scores"] is None and f["ffn_scorer"] != "magnitude") and f["data"] is None:
        raise InputError("--target-macs scores on data here: give --data (or --scores and --ffn-scorer magnitude)")
    return MacBudget(f["target_macs"], {"heads": f["min_heads_per_layer"], "ffn": f["min_neurons_per_layer"]})


def _budget(f: dict[str, Any]) -> AccuracyBudget:
    units = UNITS[f["units"]]
    if f["ffn_ratio"] is not None:
        raise InputError("--max-drop and --scorer auto choose how much goes: drop --ffn-ratio (--max-drop with "
                         "--units both removes FFN neurons too)")
    if f["ratio"] is not None or f["heads"] is not None or f["plan"] is not None:
        raise InputError("--max-drop chooses how many heads to remove: drop --ratio, --heads and --plan")
    if f["rounds"] > 1:
        raise InputError("--max-drop searches one ranking: drop --rounds")
    if f["data"] is None:
        raise InputError("--max-drop measures the metric on data: give --data")
    if f["units"] == "ffn" and (f["scores"] is not None or f["scorer"] is not None):
        raise InputError("--units ffn removes FFN neurons only: drop --scores and --scorer (use --ffn-scores or "
                         "--ffn-scorer)")
    if "heads" in units and f["scores"] is None and f["scorer"] is None:
        raise InputError("--units both ranks heads too: give --scores FILE or --scorer NAME" if f["units"] == "both"
                         else "give --scores FILE, --scorer NAME with --data to score the heads here, or --plan FILE")
    scope = f["scope"] or "global"
    return AccuracyBudget(f["max_drop"], units, scope,
                          {"heads": f["min_heads_per_layer"], "ffn": f["min_neurons_per_layer"]})


def _plan(f: dict[str, Any]) -> SavedPlan:
    if any(f[k] is not None for k in ("scores", "scorer", "ratio", "heads")):
        raise InputError("--plan applies a saved plan as it is: drop --scores, --scorer, --ratio and --heads")
    if f["ffn_ratio"] is not None:
        raise InputError("--plan applies a saved plan as it is (its pruned_ffn too): drop --ffn-ratio")
    if f["rounds"] > 1:
        raise InputError("--plan applies a saved plan in one go: drop --rounds")
    return SavedPlan.load(f["plan"]) if isinstance(f["plan"], (str, Path)) else SavedPlan(f["plan"])


def _cut(f: dict[str, Any]) -> Cut:
    if f["units"] != "heads":
        raise InputError(f"--units {f['units']} says what --max-drop removes: give --max-drop (--ffn-ratio and "
                         "--target-macs remove neurons without it)")
    amounts = {}
    if f["ratio"] is not None or f["heads"] is not None:
        if f["scores"] is None and f["scorer"] is None:
            raise InputError("give --scores FILE, --scorer NAME with --data to score the heads here, or --plan FILE")
        if f["rounds"] > 1 and f["scorer"] is None:
            raise InputError(f"--rounds {f['rounds']} re-scores the remaining heads between rounds: give --scorer "
                             "NAME and --data")
        if f["rounds"] == 1 and f["scores"] is not None and f["scorer"] is not None:
            raise InputError("--scores and --scorer both score the heads of a one-round prune: drop one "
                             "(with --rounds > 1, --scores is used for the first round)")
        scope = f["scope"] or ("per_layer" if f["heads"] is not None else "global")
        amounts["heads"] = Amount(f["ratio"], f["heads"], scope, f["min_heads_per_layer"])
    elif f["ffn_ratio"] is None:
        raise InputError("give exactly one of --ratio, --heads, --max-drop or --plan")
    elif f["scores"] is not None or f["scorer"] is not None or f["rounds"] > 1:
        raise InputError("without --ratio or --heads only FFN neurons are removed: drop --scores, --scorer and "
                         "--rounds (or give --ratio)")
    if f["ffn_ratio"] is not None:
        if f["ffn_scores"] is None and f["ffn_scorer"] == "taylor" and f["data"] is None:
            raise InputError("--ffn-ratio needs FFN scores: give --ffn-scores FILE, --data to score the neurons "
                             "(taylor), or --ffn-scorer magnitude")
        amounts["ffn"] = Amount(ratio=f["ffn_ratio"], scope=f["ffn_scope"], min_per_layer=f["min_neurons_per_layer"])
    return Cut(amounts, f["rounds"])


def _rankings(f: dict[str, Any], target: Any) -> dict[str, Ranking]:
    """The heads' ranking (a score file and / or a scorer) and the neurons' (a file, else a scorer)."""
    common = dict(samples=f["samples"], seed=f["seed"])
    rankings = {}
    if f["scores"] is not None or f["scorer"] is not None:
        options = dict(f["options"] or {})
        candidates = tuple(f["auto_scorers"]) if f["scorer"] == AUTO else AUTO_SCORERS
        rankings["heads"] = Ranking(f["scorer"], f["scores"], options, candidates=candidates, **common)
    neurons = isinstance(target, MacBudget) or (isinstance(target, Cut) and "ffn" in target.amounts) or \
        (isinstance(target, AccuracyBudget) and "ffn" in target.units)
    if neurons:
        rankings["ffn"] = Ranking(scores=f["ffn_scores"], **common) if f["ffn_scores"] is not None \
            else Ranking(f["ffn_scorer"], **common)
    return rankings
