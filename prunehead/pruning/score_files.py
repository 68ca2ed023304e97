"""Score files (prunehead.scores JSON): an L x H head, L x I FFN neuron or C x W conv channel matrix, higher =
more important, with the scorer, the model and its fingerprint; written by `prunehead score`, read by
`prune`, `sweep` and the library."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..errors import InputError
from .plan import SCORES_FORMAT, VERSION, read_json, validate_scores

# what a score file scores: heads (L x H), FFN neurons (L x I), conv channels (C x W), whole layers (L x 1)
UNITS = ("heads", "ffn", "conv", "layers")


WIDTH_KEYS = {"heads": "num_heads", "ffn": "intermediate_size", "conv": "conv_width", "layers": "width"}  # width field
NOUNS = {"heads": ("heads", "H"), "ffn": ("FFN neurons", "I"), "conv": ("conv channels", "W"), "layers": ("layers", "1")}
SCORE_FLAGS = {"heads": "--scores", "ffn": "--ffn-scores", "conv": "--conv-scores", "layers": "--layer-scores"}


def save_scores(path: str | Path, scores: torch.Tensor, scorer: str, model: str, *, units: str = "heads",
                model_fingerprint: str | None = None, **extra) -> None:
    """Write a prunehead.scores JSON file (higher = more important) of heads (L x H) or FFN neurons (L x I).

    `model_fingerprint` (`prunehead.scorers.parallel.model_fingerprint` of the scored model) lets
    `load_scores` warn when the scores are applied to another model.
    """
    L, W = validate_scores(scores)
    width = WIDTH_KEYS[_check_units(units)]
    data = {"format": SCORES_FORMAT, "version": VERSION, "units": units, "scorer": scorer, "model": model,
            "num_layers": L, width: W, "scores": scores.double().tolist(), **extra}
    if model_fingerprint is not None:
        data["model_fingerprint"] = model_fingerprint
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def _has_bool(value: object) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(_has_bool(v) for v in value))


def load_scores(path: str | Path, expect: tuple[int, int] | None = None,
                model_fingerprint: str | None = None, units: str = "heads") -> torch.Tensor:
    """Read the (L, H) head or (L, I) neuron matrix of a prunehead.scores file, checking format, version,
    units, shape and values. Files without a `units` field (written before it existed) score heads.

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
    found = data.get("units", "heads")
    if found != _check_units(units):
        flag = SCORE_FLAGS.get(found, "--scores")
        raise InputError(f"{path} scores {found}, not {units}; pass it to {flag} or score with --units {units}")
    (noun, letter), width = NOUNS[units], WIDTH_KEYS[units]
    if _has_bool(data["scores"]):
        raise InputError(f"{path}: \"scores\" holds true/false; scores must be numbers")
    try:
        scores = torch.tensor(data["scores"], dtype=torch.float64)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise InputError(f"{path}: \"scores\" must be a list of L lists of {letter} numbers, each within float "
                         "range") from None
    if scores.dim() == 2 and not torch.isfinite(scores).all():
        raise InputError(f"{path}: scores contain NaN or inf (or a number beyond float range, such as 1e400); "
                         "re-run the scorer or fix the file")
    L, W = validate_scores(scores)
    size = (data.get("num_layers"), data.get(width))
    if any(type(n) is not int for n in size) or (L, W) != size:
        raise InputError(f"{path}: scores are {L} x {W} but the file says {size[0]!r} x {size[1]!r}")
    if expect is not None and (L, W) != tuple(expect):
        raise InputError(f"{path} scores a {L} x {W} model but this model has {expect[0]} x {expect[1]} {noun}; "
                         "score this model first")
    recorded = data.get("model_fingerprint")
    if model_fingerprint is not None and recorded is not None and recorded != model_fingerprint:
        warnings.warn(f"{path} was computed on another model ({data.get('model', 'unknown')!s}, other weights); "
                      "its ranking may not fit this one: score this model to be sure", stacklevel=2)
    return scores


def _check_units(units: str) -> str:
    if units not in UNITS:
        raise InputError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    return units
