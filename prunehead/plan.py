"""Which heads to remove: `select(scores, ...)` -> a frozen `PruningPlan` that serializes to plan.json.

Pure: no model is touched here. Scores are an L x H matrix, higher = more important; the lowest go first.
Ties are broken by (layer, head) ascending, so the earlier head of two equal scores is removed first.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InputError

PLAN_FORMAT = "prunehead.plan"
SCORES_FORMAT = "prunehead.scores"
VERSION = 1


@dataclass(frozen=True)
class PruningPlan:
    """Heads to remove, by original (layer, head) ids; `pruned_heads` maps layer -> sorted head ids."""

    num_layers: int
    num_heads: int
    pruned_heads: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_pruned(self) -> int:
        return sum(len(h) for h in self.pruned_heads.values())

    def keep_mask(self) -> torch.Tensor:
        """(L, H) float mask: 1 = kept, 0 = removed."""
        mask = torch.ones(self.num_layers, self.num_heads)
        for layer, heads in self.pruned_heads.items():
            mask[layer, list(heads)] = 0.0
        return mask

    def union(self, other: PruningPlan) -> PruningPlan:
        """The plan that removes the heads of both plans (for pruning an already pruned model)."""
        merged = {l: tuple(sorted(set(self.pruned_heads.get(l, ())) | set(other.pruned_heads.get(l, ()))))
                  for l in range(self.num_layers)}
        return PruningPlan(self.num_layers, self.num_heads, {l: h for l, h in merged.items() if h})

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "version": VERSION, "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "pruned_heads": {str(l): list(h) for l, h in sorted(self.pruned_heads.items()) if h}}

    @classmethod
    def from_json(cls, data: dict, source: str = "plan") -> PruningPlan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise InputError(f"{source} is not a prunehead plan (expected \"format\": \"{PLAN_FORMAT}\")")
        L, H = int(data["num_layers"]), int(data["num_heads"])
        pruned: dict[int, tuple[int, ...]] = {}
        for layer, heads in data.get("pruned_heads", {}).items():
            l = int(layer)
            if not 0 <= l < L or any(not 0 <= int(h) < H for h in heads):
                raise InputError(f"{source}: head ({layer}, {heads}) is outside the {L} x {H} grid")
            if heads:
                pruned[l] = tuple(sorted({int(h) for h in heads}))
        return cls(L, H, pruned)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        return cls.from_json(read_json(path), source=str(path))

    @classmethod
    def from_mask(cls, keep: torch.Tensor) -> PruningPlan:
        """The plan that removes every head whose entry in the (L, H) mask is 0."""
        L, H = keep.shape
        return cls(L, H, {l: tuple(int(h) for h in torch.nonzero(keep[l] == 0).flatten())
                          for l in range(L) if (keep[l] == 0).any()})


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; pass an existing file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); pass a file written by prunehead") from None


def _order(scores: torch.Tensor, candidates: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Candidates sorted by score ascending, ties by (layer, head) ascending."""
    return sorted(candidates, key=lambda lh: (float(scores[lh]), lh))


def select(scores: torch.Tensor, *, ratio: float | None = None, heads: int | None = None,
           scope: str = "global", min_heads_per_layer: int = 0,
           pruned: PruningPlan | None = None) -> PruningPlan:
    """Choose the lowest-scoring heads to remove.

    Args:
        scores: (L, H) contributions, higher = more important.
        ratio: global: remove floor(ratio * L * H) heads overall; per-layer: floor(ratio * H) per layer.
        heads: per-layer only: remove exactly this many heads in every layer.
        scope: "global" or "per_layer".
        min_heads_per_layer: never leave a layer with fewer heads than this.
        pruned: heads already removed; they count towards the totals and are never chosen again.

    Returns:
        The plan of all removed heads (including `pruned`).
    """
    L, H = validate_scores(scores)
    if (ratio is None) == (heads is None):
        raise InputError("give exactly one of --ratio or --heads")
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        raise InputError(f"--ratio must be within [0, 1], got {ratio}")
    if heads is not None and not 0 <= heads < H:
        raise InputError(f"--heads must be within [0, {H - 1}] (the model has {H} heads per layer), got {heads}")
    if scope not in ("global", "per_layer"):
        raise InputError(f"scope must be 'global' or 'per_layer', got {scope!r}")
    if heads is not None and scope == "global":
        raise InputError("--heads removes K heads in every layer; use it with --per-layer, or use --ratio")
    if not 0 <= min_heads_per_layer <= H:
        raise InputError(f"--min-heads-per-layer must be within [0, {H}], got {min_heads_per_layer}")
    done = pruned or PruningPlan(L, H)
    if (done.num_layers, done.num_heads) != (L, H):
        raise InputError(f"scores are {L} x {H} but the model's plan is {done.num_layers} x {done.num_heads}")
    removed = {l: set(done.pruned_heads.get(l, ())) for l in range(L)}
    if scope == "global":
        asked = math.floor(ratio * L * H + 1e-9)
        _select_global(scores, removed, asked, min_heads_per_layer)
    else:
        per_layer = heads if heads is not None else math.floor(ratio * H + 1e-9)
        asked = per_layer * L
        for l in range(L):
            target = min(per_layer, H - min_heads_per_layer)
            free = [(l, h) for h in range(H) if h not in removed[l]]
            for lh in _order(scores, free)[: max(0, target - len(removed[l]))]:
                removed[l].add(lh[1])
    _warn_unreached(asked, sum(len(r) for r in removed.values()), min_heads_per_layer, H)
    return PruningPlan(L, H, {l: tuple(sorted(r)) for l, r in removed.items() if r})


def _warn_unreached(asked: int, got: int, min_heads: int, H: int) -> None:
    """One-line warning when --min-heads-per-layer keeps heads the ratio / count asked to remove."""
    if got < asked and min_heads > 0:
        warnings.warn(f"removing {got} of the {asked} heads asked for: --min-heads-per-layer {min_heads} keeps "
                      f"at least {min_heads} of {H} heads in every layer; lower it or the ratio", stacklevel=3)


def _select_global(scores: torch.Tensor, removed: dict[int, set[int]], total: int, min_heads: int) -> None:
    L, H = scores.shape
    free = [(l, h) for l in range(L) for h in range(H) if h not in removed[l]]
    count = sum(len(r) for r in removed.values())
    for l, h in _order(scores, free):
        if count >= total:
            break
        if H - len(removed[l]) > min_heads:
            removed[l].add(h)
            count += 1


def validate_scores(scores: torch.Tensor) -> tuple[int, int]:
    """(L, H) of a finite 2-D score matrix; InputError otherwise."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or 0 in scores.shape:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InputError(f"scores must be an L x H matrix, got shape {shape}")
    if not torch.isfinite(scores).all():
        raise InputError("scores contain NaN or inf; re-run the scorer or fix the score file")
    return scores.shape[0], scores.shape[1]


def save_scores(path: str | Path, scores: torch.Tensor, scorer: str, model: str, *,
                model_fingerprint: str | None = None, **extra) -> None:
    """Write a prunehead.scores JSON file (higher = more important).

    `model_fingerprint` (`prunehead.scorers.parallel.model_fingerprint` of the scored model) lets
    `load_scores` warn when the scores are applied to another model.
    """
    L, H = validate_scores(scores)
    data = {"format": SCORES_FORMAT, "version": VERSION, "scorer": scorer, "model": model,
            "num_layers": L, "num_heads": H, "scores": scores.double().tolist(), **extra}
    if model_fingerprint is not None:
        data["model_fingerprint"] = model_fingerprint
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def _has_bool(value: object) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(_has_bool(v) for v in value))


def load_scores(path: str | Path, expect: tuple[int, int] | None = None,
                model_fingerprint: str | None = None) -> torch.Tensor:
    """Read the (L, H) matrix of a prunehead.scores file, checking format, version, shape and values.

    With `model_fingerprint` (of the model the scores are about to prune), a file that records a different
    one gives a one-line warning; files without a fingerprint (hand-written) are accepted.
    """
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != SCORES_FORMAT or "scores" not in data:
        raise InputError(f"{path} is not a prunehead score file (expected \"format\": \"{SCORES_FORMAT}\"); "
                         "write one with `prunehead score`")
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise InputError(f"{path} has score-file version {version!r}, but this prunehead reads version {VERSION}; "
                         f"write \"version\": {VERSION} or re-run `prunehead score`")
    if _has_bool(data["scores"]):
        raise InputError(f"{path}: \"scores\" holds true/false; scores must be numbers")
    try:
        scores = torch.tensor(data["scores"], dtype=torch.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}: \"scores\" must be a list of L lists of H numbers") from None
    L, H = validate_scores(scores)
    size = (data.get("num_layers"), data.get("num_heads"))
    if any(type(n) is not int for n in size) or (L, H) != size:
        raise InputError(f"{path}: scores are {L} x {H} but the file says {size[0]!r} x {size[1]!r}")
    if expect is not None and (L, H) != tuple(expect):
        raise InputError(f"{path} scores a {L} x {H} model but this model has {expect[0]} x {expect[1]} heads; "
                         "score this model first")
    recorded = data.get("model_fingerprint")
    if model_fingerprint is not None and recorded is not None and recorded != model_fingerprint:
        warnings.warn(f"{path} was computed on another model ({data.get('model', 'unknown')!s}, other weights); "
                      "its ranking may not fit this one: score this model to be sure", stacklevel=2)
    return scores
