"""Errors a user can act on: every message says what is wrong and what to do."""

from __future__ import annotations

import math


class PruneheadError(Exception):
    """Base class; the CLI prints the message as one line and exits 1."""


class UnsupportedModelError(PruneheadError):
    """The model's architecture has no head adapter."""


class InputError(PruneheadError):
    """A user-supplied file, option or data set is invalid."""


class DataError(InputError):
    """A data set or audio file cannot be used."""


class MissingSplitError(DataError):
    """A data set lacks the asked-for split; `for_option` names the option that chose it."""

    def __init__(self, what: str, split: str, available: list[str] | tuple[str, ...], option: str = "--split",
                 template: str = "{what} has no split {split!r}; use {option} with one of: {available}"):
        self.what, self.split, self.available, self.option, self.template = (what, split, tuple(available), option,
                                                                              template)
        super().__init__(template.format(what=what, split=split, option=option, available=", ".join(available)))

    def for_option(self, option: str) -> MissingSplitError:
        """The same error, telling the user to change `option` (e.g. --score-split) instead of --split."""
        return MissingSplitError(self.what, self.split, self.available, option, self.template)


class Interrupted(PruneheadError):
    """The user pressed Ctrl-C; the message says how to continue (the CLI exits 130)."""


class DiskFullError(PruneheadError):
    """A write failed for lack of disk space; the message says what was kept and what to do."""


class WorkKeptError(InputError):
    """A run could not finish, and its checkpoints or finished result were kept for --resume (named in the message)."""


class DataWarning(UserWarning):
    """Some of a data set could not be read (named in the message); the rest is used."""


def check_finite(name: str, value: float | int | None) -> None:
    """InputError naming `name` (an option or recipe key) when `value` is NaN or infinite."""
    if value is not None and not isinstance(value, bool) and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value}")


def check_number(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """`value` as a finite real number within [low, high]; InputError naming `name` for a bool, a string,
    NaN, inf or a value out of range (`--max-drop nan` is "not finite", not "above 1")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, not {type(value).__name__} {value!r}")
    check_finite(name, value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"within [{low:g}, {high:g}]" if low is not None and high is not None else \
            f"at least {low:g}" if low is not None else f"at most {high:g}"
        raise InputError(f"{name} must be {span}, not {value}")
    return value


def check_int(name: str, value: object, low: int | None = None) -> int:
    """`value` as a whole number (at least `low`); InputError naming `name` for a bool, a float such as
    2.7 (never truncated) or a string."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, not {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise InputError(f"{name} must be at least {low}, not {value}")
    return value
