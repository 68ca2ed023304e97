"""Progress bars where someone watches, a line every few minutes in logs.

`bar(iterable, desc=...)` is tqdm, decided here once: a live bar when the caller asks for progress and
stderr is a TTY; otherwise (logs, pipes, CI) nothing for work shorter than `LOG_EVERY_S`, then one plain
line per `LOG_EVERY_S` ("l0 epoch 1/2: 40/169 (24 %), 05:00 elapsed, about 16:07 left"), so a long run
under nohup or a scheduler still says where it is. PRUNEHEAD_PROGRESS=1 forces live bars on, =0 turns
every bar and line off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

ENV = "PRUNEHEAD_PROGRESS"
LOG_EVERY_S = 300.0  # without a terminal: seconds before the first progress line, and between lines
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f} %), {elapsed} elapsed, about {remaining} left{postfix}"
_LOG_FORMAT_OPEN = "{desc}: {n_fmt} done, {elapsed} elapsed{postfix}"  # no total known


def _forced() -> bool | None:
    """PRUNEHEAD_PROGRESS as a switch: True (on), False (off) or None (unset / unrecognized)."""
    value = os.environ.get(ENV, "").strip().lower()
    return True if value in ("1", "true", "yes", "on") else False if value in ("0", "false", "no", "off") else None


def enabled(wanted: bool = True) -> bool:
    """Whether a bar the caller `wanted` is shown: PRUNEHEAD_PROGRESS=1/0 wins, else stderr is a terminal."""
    if not wanted:
        return False
    forced = _forced()
    if forced is not None:
        return forced
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


class _Lines:
    """A file for tqdm that turns each status update into one plain stderr line (no carriage returns, no
    blank clearing lines, no line twice in a row)."""

    def __init__(self) -> None:
        self.last = ""

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            line = line.strip()
            if line and line != self.last:
                print(line, file=sys.stderr)
                self.last = line

    def flush(self) -> None:
        sys.stderr.flush()


class _LogBar(tqdm):
    """tqdm for logs: `set_postfix` never forces a line (callers set it every step); the postfix rides on the
    next interval's line."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def bar(iterable: Iterable[Any] | None = None, *, enable: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (same keyword arguments): live when `enable` and `enabled()` say it is watched; when
    `enable` but nobody watches, a line per `LOG_EVERY_S` on stderr (none for shorter work); else silent."""
    if enabled(enable):
        return tqdm(iterable, **kwargs)
    if not enable or _forced() is False:
        return tqdm(iterable, disable=True, **kwargs)
    total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)  # type: ignore[arg-type]
    kwargs.update(file=_Lines(), leave=True, delay=LOG_EVERY_S, mininterval=LOG_EVERY_S, maxinterval=max(LOG_EVERY_S, 10.0),
                  bar_format=_LOG_FORMAT if total else _LOG_FORMAT_OPEN)
    kwargs.setdefault("desc", "working")
    return _LogBar(iterable, **kwargs)


def library_bars(enable: bool = True) -> bool:
    """Show the bars of transformers / datasets / huggingface_hub (model saving, dataset maps, downloads)
    only where `enabled(enable)`; returns that decision. Call once, at the start of a command."""
    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as tf_logging

    shown = enabled(enable)
    switches = ((tf_logging.enable_progress_bar, datasets.enable_progress_bars, hub_utils.enable_progress_bars)
                if shown else
                (tf_logging.disable_progress_bar, datasets.disable_progress_bars, hub_utils.disable_progress_bars))
    for switch in switches:
        switch()
    return shown


def say(message: str) -> None:
    """One progress line on stderr (stage messages of long commands; shown in logs too)."""
    print(message, file=sys.stderr, flush=True)
