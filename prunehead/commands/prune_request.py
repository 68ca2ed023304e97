"""`prunehead prune`'s flags -> the library's values: exactly one target (`--ratio` / `--heads` /
`--ffn-ratio` / `--conv-ratio` / `--layer-ratio`, `--max-drop`, `--target-macs` or `--plan`), the rankings,
the data and the recovery.

The one place that knows which flags go together; every message names the flags to add or drop. Nothing is
loaded here, so a bad combination fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pruning.targets import AccuracyBudget, Cut, LearnedBudget, MacBudget, SavedPlan
from ..specs import AUTO, AUTO_SCORERS, Data, Distill, Ranking, Recovery
from ..units.base import Amount

DEFAULTS: dict[str, Any] = {
    "scores": None, "plan": None, "ratio": None, "heads": None, "scope": None, "min_heads_per_layer": 0,
    "rounds": 1, "scorer": None, "data": None, "samples": 200, "score_split": "train", "seed": 0, "split": None,
    "batch_size": 16, "task": None, "clip_seconds": None, "recover_epochs": 0, "recover_lr": 5e-5,
    "dry_run": False, "options": None, "max_drop": None, "auto_scorers": AUTO_SCORERS, "ffn_ratio": None,
    "ffn_scores": None, "ffn_scorer": "taylor", "ffn_scope": "per_layer", "min_neurons_per_layer": 1,
    "target_macs": None, "units": None, "target": None, "conv_ratio": None, "conv_scores": None,
    "conv_scorer": "taylor", "conv_scope": "per_layer", "min_channels_per_layer": 1, "repair": None,
    "repair_samples": 64, "layer_ratio": None, "layer_scores": None, "layer_scorer": "taylor",
    "recover_distill": False, "distill_temperature": 2.0, "distill_labels": 1.0, "distill_hidden": 1.0,
    "distill_layers": "all", "method": "rank", "l0_epochs": 1, "l0_lr": 1e-4, "l0_gate_lr": 0.1,
}
METHODS = ("rank", "l0")  # --method: rank units by scores (every target), or learn masks (--target-macs)
TARGET_FLAGS = ("ratio", "heads", "max_drop", "target_macs", "plan", "ffn_ratio", "conv_ratio", "layer_ratio")
KIND_NAMES = ("heads", "ffn", "conv", "layers")
UNITS = {"both": ("heads", "ffn"), "all": KIND_NAMES}  # --units shorthands; else a kind or a comma list
# the kinds beyond heads: their flag prefix (--ffn-ratio, --conv-scores, --layer-scorer), noun and scorers
PARTS = {"ffn": ("ffn", "FFN neurons", ("taylor", "magnitude")),
         "conv": ("conv", "conv channels", ("taylor", "magnitude")),
         "layers": ("layer", "whole layers", ("taylor", "occlusion"))}
RATIOS = tuple(f"{prefix}_ratio" for prefix, _, _ in PARTS.values())  # ffn_ratio, conv_ratio, layer_ratio


def _flag(kind: str, what: str) -> str:
    """The flag key of a part kind: _flag("layers", "ratio") -> "layer_ratio"."""
    return f"{PARTS[kind][0]}_{what}"


def parse_units(text: str) -> tuple[str, ...]:
    """The kinds `--units` names: heads, ffn, conv, layers, both (heads and ffn), all, or a comma list."""
    kinds = UNITS.get(text) or tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or any(k not in KIND_NAMES for k in kinds) or len(set(kinds)) != len(kinds):
        raise InputError(f"--units must be heads, ffn, conv, layers, both (heads and ffn), all, or a comma list of "
                         f"distinct kinds, got {text!r}")
    return tuple(k for k in KIND_NAMES if k in kinds)


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
    if f["method"] == "l0":
        target = _learned(f)
    elif f["target"] is not None and all(f[k] is None for k in TARGET_FLAGS):  # a recipe's [prune], unless flags say
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
    distill = _distill(f)
    recover = Recovery(f["recover_epochs"], f["recover_lr"], f["seed"], f["repair"], f["repair_samples"],
                       distill) if f["recover_epochs"] or f["repair"] is not None else None
    rankings = _rankings(f, target)
    _check_scorers(rankings.get("heads"))
    return PruneRequest(target, rankings, data, recover)


def _distill(f: dict[str, Any]) -> Distill | None:
    """The distillation of `--recover-distill` (its settings flags need it)."""
    settings = {k: f[f"distill_{k}"] for k in ("temperature", "labels", "hidden", "layers")}
    if f["method"] == "l0" and not f["recover_distill"]:
        return None  # the settings are the mask learner's (`_learned`)
    if not f["recover_distill"]:
        changed = [f"--distill-{k}" for k, v in settings.items() if v != DEFAULTS[f"distill_{k}"]]
        if changed:
            raise InputError(f"{', '.join(changed)} set(s) the distillation of --recover-distill: add it")
        return None
    if not f["recover_epochs"]:
        raise InputError("--recover-distill trains the pruned model: give --recover-epochs 1 or more and --data")
    return Distill(**settings)


def _learned(f: dict[str, Any]) -> LearnedBudget:
    """`--method l0 --target-macs F`: masks learned under the budget, distilling from the unpruned model."""
    if f["target_macs"] is None or f["data"] is None:
        raise InputError("--method l0 learns masks under a MAC budget on the train split: give --target-macs F and "
                         "--data")
    given = [k for k in ("plan", "ratio", "heads", *RATIOS, "max_drop", "scores", "scorer") if f[k] is not None]
    if given or f["rounds"] > 1:
        raise InputError(f"--method l0 learns which units go: drop {', '.join('--' + k.replace('_', '-') for k in given)}"
                         f"{' and --rounds' if f['rounds'] > 1 else ''}")
    units = parse_units(f["units"]) if f["units"] is not None else ("heads", "ffn")
    settings = Distill(**{k: f[f"distill_{k}"] for k in ("temperature", "labels", "hidden", "layers")})
    return LearnedBudget(f["target_macs"], units, f["l0_epochs"], f["l0_lr"], f["l0_gate_lr"], settings)


def _check_scorers(ranking: Ranking | None) -> None:
    """Unknown scorers and bad scorer options fail here, before anything loads."""
    from ..scorers.registry import build_scorer

    if ranking is None or ranking.scorer is None:
        return
    for name in ranking.candidates if ranking.scorer == AUTO else [ranking.scorer]:
        build_scorer(name, ranking.options if ranking.scorer != AUTO else None, seed=ranking.seed)


def _check_common(f: dict[str, Any]) -> None:
    if f["method"] not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {f['method']!r}")
    if f["method"] != "l0" and any(f[k] != DEFAULTS[k] for k in ("l0_epochs", "l0_lr", "l0_gate_lr")):
        raise InputError("--l0-epochs, --l0-lr and --l0-gate-lr set the mask learning of --method l0: add it")
    if f["units"] is not None:
        parse_units(f["units"])
    for kind, (prefix, _, scorers) in PARTS.items():
        if f[f"{prefix}_scorer"] not in scorers:
            raise InputError(f"--{prefix}-scorer must be one of {', '.join(scorers)}, got {f[f'{prefix}_scorer']!r}")
    if f["recover_epochs"] < 0 or not f["recover_lr"] > 0:
        raise InputError("--recover-epochs must be >= 0 and --recover-lr > 0")
    if f["recover_epochs"] and f["data"] is None:
        raise InputError("--recover-epochs fine-tunes on the train split of --data: give --data")
    if f["repair"] is not None and f["data"] is None:
        raise InputError(f"--repair {f['repair']} calibrates on samples of --data's --score-split: give --data")
    if f["dry_run"] and (f["recover_epochs"] or f["rounds"] > 1 or f["repair"] is not None):
        raise InputError("--dry-run only decides the plan (no surgery): drop --recover-epochs, --repair and --rounds")
    if f["scorer"] is not None and f["data"] is None:
        raise InputError(f"--scorer {f['scorer']} scores the heads on data: give --data")
    if f["scorer"] == AUTO and f["scores"] is not None:
        raise InputError("--scorer auto scores its candidates on --data itself: drop --scores")
    if f["scorer"] == AUTO and f["rounds"] > 1:
        raise InputError("--scorer auto picks one ranking for a one-shot cut: drop --rounds")
    if f["scorer"] == AUTO and f["options"]:
        raise InputError("--scorer auto runs each candidate with its defaults: drop --option")
    for kind, (prefix, noun, _) in PARTS.items():
        asked = f[f"{prefix}_ratio"] is not None or f["target_macs"] is not None or \
            (f["units"] is not None and kind in parse_units(f["units"]))
        if f[f"{prefix}_scores"] is not None and not asked:
            raise InputError(f"--{prefix}-scores ranks {noun} for --{prefix}-ratio: give --{prefix}-ratio (or "
                             f"--max-drop with --units {'both' if kind == 'ffn' else kind})")


def _floors(f: dict[str, Any]) -> dict[str, int]:
    return {"heads": f["min_heads_per_layer"], "ffn": f["min_neurons_per_layer"], "conv": f["min_channels_per_layer"]}


def _on_data(f: dict[str, Any], kind: str) -> bool:
    """Whether `kind`'s ranking is computed on data here (no score file, a scorer that reads data)."""
    return f[_flag(kind, "scores")] is None and f[_flag(kind, "scorer")] != "magnitude"


def _macs(f: dict[str, Any]) -> MacBudget:
    if any(f[k] is not None for k in ("plan", "ratio", "heads", *RATIOS, "max_drop")) or f["rounds"] > 1:
        raise InputError("--target-macs chooses the units itself: drop --plan, --ratio, --heads, --ffn-ratio, "
                         "--conv-ratio, --layer-ratio, --max-drop and --rounds")
    units = parse_units(f["units"]) if f["units"] is not None else ("heads", "ffn")
    if "heads" not in units:
        raise InputError("--target-macs ranks heads too: give --units with heads in it (heads,conv, both, all)")
    if f["scores"] is None and f["scorer"] is None:
        raise InputError("--target-macs ranks heads too: give --scores FILE or --scorer NAME with --data")
    if (f["scorer"] is not None or any(_on_data(f, k) for k in units if k != "heads")) and f["data"] is None:
        raise InputError("--target-macs scores on data here: give --data (or --scores and score files for the "
                         "other kinds, or --ffn-scorer / --conv-scorer magnitude)")
    return MacBudget(f["target_macs"], _floors(f), units)


def _budget(f: dict[str, Any]) -> AccuracyBudget:
    units = parse_units(f["units"] or "heads")
    if any(f[k] is not None for k in RATIOS):
        raise InputError("--max-drop and --scorer auto choose how much goes: drop --ffn-ratio, --conv-ratio and "
                         "--layer-ratio (--max-drop with --units both / all removes those units too)")
    if f["ratio"] is not None or f["heads"] is not None or f["plan"] is not None:
        raise InputError("--max-drop chooses how many heads to remove: drop --ratio, --heads and --plan")
    if f["rounds"] > 1:
        raise InputError("--max-drop searches one ranking: drop --rounds")
    if f["data"] is None:
        raise InputError("--max-drop measures the metric on data: give --data")
    if "heads" not in units and (f["scores"] is not None or f["scorer"] is not None):
        raise InputError(f"--units {f['units']} removes no heads: drop --scores and --scorer (use --ffn-scores / "
                         "--ffn-scorer, --conv-scores / --conv-scorer)")
    if "heads" in units and f["scores"] is None and f["scorer"] is None:
        raise InputError(f"--units {f['units']} ranks heads too: give --scores FILE or --scorer NAME"
                         if len(units) > 1 else
                         "give --scores FILE, --scorer NAME with --data to score the heads here, or --plan FILE")
    scope = f["scope"] or "global"
    return AccuracyBudget(f["max_drop"], units, scope, _floors(f))


def _plan(f: dict[str, Any]) -> SavedPlan:
    if any(f[k] is not None for k in ("scores", "scorer", "ratio", "heads")):
        raise InputError("--plan applies a saved plan as it is: drop --scores, --scorer, --ratio and --heads")
    if any(f[k] is not None for k in RATIOS):
        raise InputError("--plan applies a saved plan as it is (its neurons, channels and layers too): drop "
                         "--ffn-ratio, --conv-ratio and --layer-ratio")
    if f["rounds"] > 1:
        raise InputError("--plan applies a saved plan in one go: drop --rounds")
    return SavedPlan.load(f["plan"]) if isinstance(f["plan"], (str, Path)) else SavedPlan(f["plan"])


def _cut(f: dict[str, Any]) -> Cut:
    if f["units"] is not None:
        raise InputError(f"--units {f['units']} says what a budget removes: give --max-drop or --target-macs "
                         "(--ffn-ratio, --conv-ratio and --layer-ratio remove the other kinds without it)")
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
    elif all(f[k] is None for k in RATIOS):
        raise InputError("give exactly one of --ratio, --heads, --max-drop or --plan")
    elif f["scores"] is not None or f["scorer"] is not None or f["rounds"] > 1:
        raise InputError("without --ratio or --heads only FFN neurons / conv channels / layers are removed: drop "
                         "--scores, --scorer and --rounds (or give --ratio)")
    for kind, (prefix, noun, scorers) in PARTS.items():
        if f[f"{prefix}_ratio"] is None:
            continue
        if _on_data(f, kind) and f["data"] is None:
            free = f", or --{prefix}-scorer magnitude" if "magnitude" in scorers else ""
            raise InputError(f"--{prefix}-ratio needs scores of the {noun}: give --{prefix}-scores FILE or --data to "
                             f"score them ({f[f'{prefix}_scorer']}){free}")
        if kind == "layers":  # one unit per layer: ranked over the whole encoder
            if f["rounds"] > 1:
                raise InputError("--layer-ratio removes layers once, after the rounds' heads would be renumbered: "
                                 "drop --rounds")
            amounts[kind] = Amount(ratio=f["layer_ratio"])
            continue
        amounts[kind] = Amount(ratio=f[f"{prefix}_ratio"], scope=f[f"{prefix}_scope"],
                               min_per_layer=f["min_neurons_per_layer" if kind == "ffn" else "min_channels_per_layer"])
    return Cut(amounts, f["rounds"])


def _rankings(f: dict[str, Any], target: Any) -> dict[str, Ranking]:
    """The heads' ranking (a score file and / or a scorer), the neurons' and the channels' (a file, else a
    scorer), for the kinds `target` removes."""
    common = dict(samples=f["samples"], seed=f["seed"])
    rankings = {}
    if f["scores"] is not None or f["scorer"] is not None:
        options = dict(f["options"] or {})
        candidates = tuple(f["auto_scorers"]) if f["scorer"] == AUTO else AUTO_SCORERS
        rankings["heads"] = Ranking(f["scorer"], f["scores"], options, candidates=candidates, **common)
    kinds = target.amounts if isinstance(target, Cut) else () if isinstance(target, LearnedBudget) \
        else getattr(target, "units", ())
    for kind in PARTS:
        if kind in kinds:
            scores = f[_flag(kind, "scores")]
            rankings[kind] = Ranking(scores=scores, **common) if scores is not None \
                else Ranking(f[_flag(kind, "scorer")], **common)
    return rankings
