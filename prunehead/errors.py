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


class DataWarning(UserWarning):
    """Some of a data set could not be read (named in the message); the rest is used."""


def check_finite(name: str, value: float | int | None) -> None:
    """InputError naming `name` (an option or recipe key) when `value` is NaN or infinite."""
    if value is not None and not isinstance(value, bool) and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value}")
