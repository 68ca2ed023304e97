"""Errors a user can act on: every message says what is wrong and what to do."""

from __future__ import annotations


class PruneheadError(Exception):
    """Base class; the CLI prints the message as one line and exits 1."""


class UnsupportedModelError(PruneheadError):
    """The model's architecture has no head adapter."""


class InputError(PruneheadError):
    """A user-supplied file, option or data set is invalid."""


class DataError(InputError):
    """A data set or audio file cannot be used."""


class Interrupted(PruneheadError):
    """The user pressed Ctrl-C; the message says how to continue (the CLI exits 130)."""
