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
