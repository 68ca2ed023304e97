"""Which heads to remove: `select(scores, ...)` -> a frozen `PruningPlan` that serializes to plan.json;
which feed-forward neurons, conv channels and whole layers to remove as well: `select_ffn`, `select_conv`,
`select_layers`.

Pure: no model is touched here. Scores are an L x H (heads) or L x I (neurons) matrix, higher = more
important; the lowest go first. Ties are broken by (layer, unit) ascending, so the earlier of two equal
scores is removed first.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import InputError, check_int, check_number

PLAN_FORMAT = "prunehead.plan"
MAX_CONV_LAYERS = 64  # plan.json does not state the conv layer count; ids beyond this are refused
SCORES_FORMAT = "prunehead.scores"
VERSION = 1


def removal_mask(removed: dict[int, tuple[int, ...]], grid: tuple[int, int]) -> torch.Tensor:
    """(L, W) float mask on `grid`: 0 at the units `removed` lists ({layer: ids}), 1 elsewhere."""
    keep = torch.ones(*grid)
    for layer, ids in removed.items():
        keep[layer, list(ids)] = 0.0
    return keep


@dataclass(frozen=True)
class PruningPlan:
    """Heads (and feed-forward neurons, conv channels) to remove, by original ids.

    `pruned_heads` maps layer -> sorted head ids; `pruned_ffn` maps layer -> sorted intermediate-neuron ids
    of that layer's feed-forward block, out of `intermediate_size` (0 when the plan removes no neurons);
    `pruned_conv` maps conv layer -> sorted output-channel ids of the front end, out of `conv_width`;
    `pruned_layers` lists the encoder layers removed outright (removed last, after the other units).
    """

    num_layers: int
    num_heads: int
    pruned_heads: dict[int, tuple[int, ...]] = field(default_factory=dict)
    pruned_ffn: dict[int, tuple[int, ...]] = field(default_factory=dict)
    intermediate_size: int = 0
    pruned_conv: dict[int, tuple[int, ...]] = field(default_factory=dict)
    conv_width: int = 0
    pruned_layers: tuple[int, ...] = ()

    @property
    def num_pruned_layers(self) -> int:
        return len(self.pruned_layers)

    @property
    def num_pruned_conv(self) -> int:
        return sum(len(c) for c in self.pruned_conv.values())

    @property
    def num_pruned(self) -> int:
        return sum(len(h) for h in self.pruned_heads.values())

    @property
    def num_pruned_ffn(self) -> int:
        return sum(len(n) for n in self.pruned_ffn.values())

    def keep_mask(self) -> torch.Tensor:
        """(L, H) float mask: 1 = kept, 0 = removed."""
        return removal_mask(self.pruned_heads, (self.num_layers, self.num_heads))

    def ffn_keep_mask(self, intermediate_size: int | None = None) -> torch.Tensor:
        """(L, I) float mask over the feed-forward neurons: 1 = kept, 0 = removed."""
        return removal_mask(self.pruned_ffn, (self.num_layers, intermediate_size or self.intermediate_size))

    def on_layers(self, layers: list[int]) -> PruningPlan:
        """The heads and neurons this plan removes in encoder `layers`, renumbered 0..len(layers)-1."""
        def part(units: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
            return {i: units[l] for i, l in enumerate(layers) if l in units}

        return PruningPlan(len(layers), self.num_heads, part(self.pruned_heads), part(self.pruned_ffn),
                           self.intermediate_size)

    def with_layers(self, part: PruningPlan, layers: list[int]) -> PruningPlan:
        """This plan plus the heads and neurons of `part` (a plan on `layers`, numbered as `on_layers` does)."""
        back = PruningPlan(self.num_layers, self.num_heads, {layers[i]: ids for i, ids in part.pruned_heads.items()},
                           {layers[i]: ids for i, ids in part.pruned_ffn.items()}, part.intermediate_size)
        return self.union(back)

    def union(self, other: PruningPlan) -> PruningPlan:
        """The plan that removes the units of both plans (for pruning an already pruned model)."""
        size = self.intermediate_size or other.intermediate_size
        return PruningPlan(self.num_layers, self.num_heads, _merge(self.pruned_heads, other.pruned_heads),
                           _merge(self.pruned_ffn, other.pruned_ffn), size,
                           pruned_conv=_merge(self.pruned_conv, other.pruned_conv),
                           conv_width=self.conv_width or other.conv_width,
                           pruned_layers=tuple(sorted(set(self.pruned_layers) | set(other.pruned_layers))))

    def to_json(self) -> dict:
        data = {"format": PLAN_FORMAT, "version": VERSION, "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "pruned_heads": {str(l): list(h) for l, h in sorted(self.pruned_heads.items()) if h}}
        if self.pruned_ffn:  # head-only plans keep their old shape
            data["intermediate_size"] = self.intermediate_size
            data["pruned_ffn"] = {str(l): list(n) for l, n in sorted(self.pruned_ffn.items()) if n}
        if self.pruned_conv:
            data["conv_width"] = self.conv_width
            data["pruned_conv"] = {str(l): list(c) for l, c in sorted(self.pruned_conv.items()) if c}
        if self.pruned_layers:
            data["pruned_layers"] = list(self.pruned_layers)
        return data

    @classmethod
    def from_json(cls, data: dict, source: str = "plan") -> PruningPlan:
        """The plan of a plan.json dict; InputError naming `source` for anything that is not whole numbers in
        range (2.7, true and "3" are refused, never truncated)."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise InputError(f"{source} is not a prunehead plan (expected \"format\": \"{PLAN_FORMAT}\")")
        L, H = (_whole(data.get(key), f"\"{key}\"", source, 1) for key in ("num_layers", "num_heads"))
        pruned = _read_ids(data.get("pruned_heads", {}), L, H, "head", source)
        size = _whole(data.get("intermediate_size", 0), "\"intermediate_size\"", source, 0)
        ffn = data.get("pruned_ffn", {})
        if ffn and size <= 0:
            raise InputError(f"{source}: \"pruned_ffn\" needs a positive \"intermediate_size\"")
        width = _whole(data.get("conv_width", 0), "\"conv_width\"", source, 0)
        conv = data.get("pruned_conv", {})
        if conv and width <= 0:
            raise InputError(f"{source}: \"pruned_conv\" needs a positive \"conv_width\"")
        layers = data.get("pruned_layers", [])
        if not isinstance(layers, list):
            raise InputError(f"{source}: \"pruned_layers\" must be a list of layer ids, e.g. [3, 7]")
        layers = [_whole(l, f"layer id {l!r} of \"pruned_layers\"", source, 0) for l in layers]
        if any(l >= L for l in layers):
            raise InputError(f"{source}: \"pruned_layers\" {layers} reaches beyond the {L} layers")
        return cls(L, H, pruned, _read_ids(ffn, L, size, "neuron", source), size,
                   pruned_conv=_read_ids(conv, MAX_CONV_LAYERS, width, "channel", source), conv_width=width,
                   pruned_layers=tuple(sorted(set(layers))))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        return cls.from_json(read_json(path), source=str(path))

    @classmethod
    def from_mask(cls, keep: torch.Tensor) -> PruningPlan:
        """The plan that removes every head whose entry in the (L, H) mask is 0."""
        L, H = keep.shape
        return cls(L, H, _zeros_of(keep))

    def with_ffn_mask(self, keep: torch.Tensor) -> PruningPlan:
        """This plan's heads plus the neurons whose entry in the (L, I) mask is 0 (replacing its neurons)."""
        return replace(self, pruned_ffn=_zeros_of(keep), intermediate_size=keep.shape[1])


def _zeros_of(keep: torch.Tensor) -> dict[int, tuple[int, ...]]:
    """{row: column ids} of the zero entries of a 2-D mask, rows without zeros left out."""
    return {l: tuple(int(h) for h in torch.nonzero(keep[l] == 0).flatten())
            for l in range(keep.shape[0]) if (keep[l] == 0).any()}


def _merge(a: dict[int, tuple[int, ...]], b: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
    return {l: tuple(sorted(set(a.get(l, ())) | set(b.get(l, ())))) for l in sorted(set(a) | set(b))
            if a.get(l) or b.get(l)}


def _whole(value: object, what: str, source: str, low: int) -> int:
    """`value` if it is a whole number >= `low` (not a bool, float or string); InputError naming `source`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{source}: {what} must be a whole number >= {low}, not {value!r}")
    return value


def _read_ids(raw: object, rows: int, columns: int, unit: str, source: str) -> dict[int, tuple[int, ...]]:
    """{layer: sorted unique ids} from a plan's JSON map, each id inside the rows x columns grid."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: the {unit}s must map layer numbers to lists of ids, e.g. {{\"0\": [1, 3]}}")
    out: dict[int, tuple[int, ...]] = {}
    for layer, ids in raw.items():
        l = int(layer) if isinstance(layer, str) and layer.isdigit() else layer
        l = _whole(l, f"the layer {layer!r} of the {unit}s", source, 0)
        if not isinstance(ids, (list, tuple)):
            raise InputError(f"{source}: layer {layer}'s {unit}s must be a list of ids, not {ids!r}")
        ids = [_whole(i, f"{unit} id {i!r} (layer {layer})", source, 0) for i in ids]
        if not 0 <= l < rows or any(not i < columns for i in ids):
            raise InputError(f"{source}: {unit} ({layer}, {ids}) is outside the {rows} x {columns} grid")
        if ids:
            out[l] = tuple(sorted(set(ids)))
    return out


def read_json(path: str | Path) -> dict:
    """A JSON file written by prunehead; InputError naming the file for anything else (a number too large
    for a float, nesting too deep, broken text)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; pass an existing file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; pass a file written by prunehead") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} is not valid JSON ({str(err)[:100]}); pass a file written by prunehead") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a prunehead file; pass a file written by prunehead") \
            from None


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
    if ratio is not None:
        check_number("--ratio", ratio, 0.0, 1.0)  # True is not 1.0: a bool is refused, never "every head"
    if heads is not None:
        check_int("--heads", heads)
    check_int("--min-heads-per-layer", min_heads_per_layer)
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


def select_ffn(scores: torch.Tensor, plan: PruningPlan, *, ratio: float, scope: str = "per_layer",
               min_neurons_per_layer: int = 1) -> PruningPlan:
    """`plan` plus the lowest-scoring feed-forward neurons (its own neurons count and stay removed).

    Args:
        scores: (L, I) neuron importances, higher = more important (`prunehead.scorers.ffn.score_ffn`).
        plan: the heads (and neurons) already decided, e.g. `select(head_scores, ...)` or an empty plan.
        ratio: per-layer: remove floor(ratio * I) neurons in every layer; global: floor(ratio * L * I) overall,
            ranked across layers.
        scope: "per_layer" or "global".
        min_neurons_per_layer: never leave a layer with fewer neurons than this (the global scope's floor).
    """
    L, I = validate_scores(scores)
    check_number("--ffn-ratio", ratio, 0.0, 1.0)
    check_int("--min-neurons-per-layer", min_neurons_per_layer)
    if scope not in ("global", "per_layer"):
        raise InputError(f"scope must be 'global' or 'per_layer', got {scope!r}")
    if not 0 <= min_neurons_per_layer <= I:
        raise InputError(f"the per-layer floor must be within [0, {I}] neurons, got {min_neurons_per_layer}")
    if L != plan.num_layers or plan.intermediate_size not in (0, I):
        raise InputError(f"FFN scores are {L} x {I} but the model has {plan.num_layers} layers of "
                         f"{plan.intermediate_size or '?'} neurons; score this model's FFN neurons first")
    removed = {l: set(plan.pruned_ffn.get(l, ())) for l in range(L)}
    if scope == "global":
        _select_global(scores, removed, math.floor(ratio * L * I + 1e-9), min_neurons_per_layer)
    else:
        target = min(math.floor(ratio * I + 1e-9), I - min_neurons_per_layer)
        for l in range(L):
            free = [(l, i) for i in range(I) if i not in removed[l]]
            for _, i in _order(scores, free)[: max(0, target - len(removed[l]))]:
                removed[l].add(i)
    return replace(plan, pruned_ffn={l: tuple(sorted(r)) for l, r in removed.items() if r}, intermediate_size=I)


def select_conv(scores: torch.Tensor, plan: PruningPlan, *, ratio: float, scope: str = "per_layer",
                min_channels_per_layer: int = 1) -> PruningPlan:
    """`plan` plus the lowest-scoring conv channels (its own channels count and stay removed).

    Args:
        scores: (C, W) channel importances of the C conv layers, higher = more important
            (`prunehead.scorers.conv.score_conv`).
        ratio: per-layer: floor(ratio * W) channels in every layer; global: floor(ratio * C * W) ranked
            across the conv layers.
        min_channels_per_layer: never leave a layer with fewer channels than this (at least 1).
    """
    C, W = validate_scores(scores)
    check_number("--conv-ratio", ratio, 0.0, 1.0)
    check_int("--min-channels-per-layer", min_channels_per_layer)
    if scope not in ("global", "per_layer"):
        raise InputError(f"scope must be 'global' or 'per_layer', got {scope!r}")
    if plan.conv_width not in (0, W) or any(l >= C for l in plan.pruned_conv):
        raise InputError(f"conv scores are {C} x {W} but the plan's conv layers are {plan.conv_width} wide; "
                         "score this model's conv channels first")
    floor = max(1, min_channels_per_layer)  # a conv layer keeps a channel: its consumers need an input
    removed = {l: set(plan.pruned_conv.get(l, ())) for l in range(C)}
    if scope == "global":
        _select_global(scores, removed, math.floor(ratio * C * W + 1e-9), floor)
    else:
        for l in range(C):
            target = min(math.floor(ratio * W + 1e-9), W - floor)
            free = [(l, c) for c in range(W) if c not in removed[l]]
            for _, c in _order(scores, free)[: max(0, target - len(removed[l]))]:
                removed[l].add(c)
    return replace(plan, pruned_conv={l: tuple(sorted(r)) for l, r in removed.items() if r}, conv_width=W)


def select_layers(scores: torch.Tensor, plan: PruningPlan, *, ratio: float | None = None, count: int | None = None,
                  fixed: frozenset[int] = frozenset()) -> PruningPlan:
    """`plan` plus the lowest-scoring whole encoder layers (its own removed layers count and stay removed).

    Args:
        scores: (L, 1) layer importances, higher = more important (`prunehead.scorers.depth.score_layers`).
        ratio: remove floor(ratio * L) layers in all; or `count` layers.
        fixed: layers the family cannot remove (WavLM's first: it computes the position bias of all).
    """
    L, W = validate_scores(scores)
    if W != 1 or L != plan.num_layers:
        raise InputError(f"layer scores are {L} x {W} but the model has {plan.num_layers} layers (x 1); score this "
                         "model's layers first (prunehead score --units layers)")
    if (ratio is None) == (count is None):
        raise InputError("give exactly one of --layer-ratio or a layer count")
    if ratio is not None:
        check_number("--layer-ratio", ratio, 0.0, 1.0)
    asked = math.floor(ratio * L + 1e-9) if ratio is not None else check_int("--layers", count, 0)
    removed = set(plan.pruned_layers)
    for _, (l, _) in zip(range(max(0, asked - len(removed))),
                         _order(scores, [(l, 0) for l in range(L) if l not in removed and l not in fixed])):
        removed.add(l)
    if len(removed) < asked:
        warnings.warn(f"removing {len(removed)} of the {asked} layers asked for: layer(s) {sorted(fixed)} of this "
                      "family cannot be removed", stacklevel=2)
    return replace(plan, pruned_layers=tuple(sorted(removed)))


def validate_scores(scores: torch.Tensor) -> tuple[int, int]:
    """(L, H) of a finite 2-D score matrix; InputError otherwise."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or 0 in scores.shape:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InputError(f"scores must be an L x H matrix, got shape {shape}")
    if not torch.isfinite(scores).all():
        raise InputError("scores contain NaN or inf; re-run the scorer or fix the score file")
    return scores.shape[0], scores.shape[1]
