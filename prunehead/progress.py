"""Progress bars only where someone watches: on a terminal, not in logs, pipes or CI.

`bar(iterable, desc=...)` is tqdm with `disable` decided here once: shown when the caller asks for
progress and stderr is a TTY. PRUNEHEAD_PROGRESS=1 forces bars on (e.g. `script` logs), =0 turns them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

ENV = "PRUNEHEAD_PROGRESS"


def enabled(wanted: bool = True) -> bool:
    """Whether a bar the caller `wanted` is shown: PRUNEHEAD_PROGRESS=1/0 wins, else stderr is a terminal."""
    if not wanted:
        return False
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def bar(iterable: Iterable[Any] | None = None, *, enable: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (same keyword arguments), disabled unless `enable` and `enabled()` say it is watched."""
    return tqdm(iterable, disable=not enabled(enable), **kwargs)


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
