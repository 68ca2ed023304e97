"""The step JSON files: `<root>/<model>/<step>.json`, written atomically.

    {"format": "prunehead.results.step", "version": 1, "model": ..., "step": ...,
     "fingerprint": sha256 of the step's command lines and input files (null: imported from the docs),
     "imported": true only for figures read from docs/results.md's tables,
     "commands": [{"argv": [...], "wall_s": ..., "legs": ...}], "wall_s": ...,
     "figures": {PART: {"rows": [...], ...}},   # what the blocks render
     "extra": {...}}                            # figures no table shows (prose numbers, timings)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT, VERSION = "prunehead.results.step", 1
Record = dict[str, Any]


def step_path(root: Path, model: str, step: str) -> Path:
    return root / model / f"{step}.json"


def read_step(root: Path, model: str, step: str) -> Record | None:
    """The step's record, or None when there is none; a one-line error for a file that is not one."""
    path = step_path(root, model, step)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and run `make results` again") from None
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a results step file; delete it and run `make results` again")
    return record


def new_record(model: str, step: str, *, fingerprint: str | None, imported: bool = False) -> Record:
    return {"format": FORMAT, "version": VERSION, "model": model, "step": step, "fingerprint": fingerprint,
            "imported": imported, "commands": [], "wall_s": None, "figures": {}, "extra": {}}


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, replacing `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1) + "\n")
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plain create would make it (mkstemp makes it owner-only)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_step(root: Path, record: Record) -> Path:
    path = step_path(root, record["model"], record["step"])
    write_json(path, record)
    return path
