"""Fill docs/results.md's marker blocks from the step JSON and say, figure by figure, what moved.

    <!-- results:whisper-tiny-fsdd-ks/global -->
    | ratio | removed | hib | ...
    <!-- /results -->

Only the lines between the markers are generated; the prose around them is kept. A block whose JSON is
absent keeps its documented table (a table of several models keeps the rows of the absent ones), so a
partial run updates exactly what it measured. Rendering is a pure function of the JSON: the same JSON
gives a byte-identical document.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blocks import BLOCKS, BY_ID, Block, join, split
from .store import read_step
from .tables import Table, TableError

OPEN = re.compile(r"^<!-- results:(\S+) -->$")
CLOSE = "<!-- /results -->"
TOLERANCE = 0.01  # a figure moved when |new - old| > TOLERANCE * max(1, |old|)


class MarkerError(ValueError):
    """Missing, unknown or unbalanced markers (one line, names the block)."""


@dataclass(frozen=True)
class Span:
    """Lines [start, end) of the document hold block `id`'s table (the marker lines excluded)."""

    id: str
    start: int
    end: int


def find_blocks(text: str, doc: str = "docs/results.md", require_all: bool = True) -> list[Span]:
    """Every marker block of `text`; MarkerError for a block that is unclosed, unknown, twice or missing."""
    spans, open_at, open_id = [], -1, None
    for i, line in enumerate(text.split("\n")):
        m = OPEN.match(line.strip())
        if m:
            if open_id is not None:
                raise MarkerError(f"{doc}:{open_at}: block {open_id} is not closed before block {m[1]} opens "
                                  f"(line {i + 1}); add {CLOSE} after its table")
            if m[1] not in BY_ID:
                raise MarkerError(f"{doc}:{i + 1}: unknown block {m[1]}; use one of the ids in "
                                  "bench/results/blocks.py")
            if any(s.id == m[1] for s in spans):
                raise MarkerError(f"{doc}:{i + 1}: block {m[1]} appears twice; keep one")
            open_at, open_id = i + 1, m[1]
        elif line.strip() == CLOSE:
            if open_id is None:
                raise MarkerError(f"{doc}:{i + 1}: {CLOSE} closes no block; remove it or open the block above "
                                  "its table with <!-- results:ID -->")
            spans.append(Span(open_id, open_at, i))
            open_id = None
    if open_id is not None:
        raise MarkerError(f"{doc}:{open_at}: block {open_id} has no closing {CLOSE}; add it after its table")
    found = {s.id for s in spans}
    missing = [b.id for b in BLOCKS if b.id not in found]
    if require_all and missing:
        raise MarkerError(f"{doc}: block {missing[0]} is missing; put <!-- results:{missing[0]} --> and {CLOSE} "
                          "around its table")
    return spans


def parse_block(block: Block, text: str, doc: str = "docs/results.md") -> Table:
    try:
        return block.layout.parse(text)
    except (TableError, ValueError, IndexError, TypeError) as e:
        raise MarkerError(f"{doc}: block {block.id} cannot be read ({e}); fix its table by hand") from None


def measured_parts(block: Block, root: Path) -> dict[str, Table]:
    """The block's parts found under `root`, by model."""
    parts = {}
    for model in block.models:
        record = read_step(root, model, block.step)
        if record is not None and block.part in record.get("figures", {}):
            parts[model] = record["figures"][block.part]
    return parts


def flatten(table: Table) -> dict[str, Any]:
    """Every figure of a table by name: `FIELD@ROW` (ROW: `MODEL KEY`, `KEY` or `MODEL`), scalars by name."""
    names: dict[str, Any] = {k: v for k, v in table.items() if k != "rows"}
    for row in table.get("rows", []):
        where = " ".join(str(row[k]) for k in ("model", "key") if row.get(k) is not None)
        names.update({f"{k}@{where}": v for k, v in row.items() if k not in ("model", "key")})
    return names


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def moved(new: Any, old: Any, tolerance: float) -> bool:
    if isinstance(new, (int, float)) and isinstance(old, (int, float)) and not isinstance(new, bool):
        return not math.isclose(new, old, rel_tol=0, abs_tol=tolerance * max(1.0, abs(old)))
    return new != old


def compare(block_id: str, old: Table, new: Table, tolerance: float) -> tuple[list[str], int]:
    """One line per figure: `ID NAME: NEW (documented OLD)`, flagged where it moved; and the moved count."""
    before, after = flatten(old), flatten(new)
    lines, count = [], 0
    for name in [*after, *(n for n in before if n not in after)]:
        if name not in before:
            line, flag = f"{block_id} {name}: {_show(after[name])} (not documented)", True
        elif name not in after:
            line, flag = f"{block_id} {name}: gone (documented {_show(before[name])})", True
        else:
            line = f"{block_id} {name}: {_show(after[name])} (documented {_show(before[name])})"
            flag = moved(after[name], before[name], tolerance)
        count += flag
        lines.append(line + ("   <-- MOVED" if flag else ""))
    return lines, count


def render(text: str, root: Path, tolerance: float = TOLERANCE, doc: str = "docs/results.md",
           verbose: bool = True) -> tuple[str, list[str]]:
    """(the document with every block that has JSON under `root` regenerated, the report lines)."""
    lines = text.split("\n")
    out, report, cursor = [], [], 0
    for span in find_blocks(text, doc):
        block = BY_ID[span.id]
        old_text = "\n".join(lines[span.start:span.end])
        old = parse_block(block, old_text, doc)
        parts = measured_parts(block, root)
        new_text = old_text
        if parts:
            new = join(block, {**split(block, old), **parts})
            new_text = block.layout.render(new)
            figures, count = compare(block.id, old, new, tolerance)
            report += figures if verbose else []
            report.append(f"{block.id}: {len(figures)} figures, {count} moved beyond {tolerance:g} or new/gone; "
                          f"from {', '.join(sorted(parts))}")
        else:
            report.append(f"{block.id}: no JSON under {root}; kept as documented")
        out += lines[cursor:span.start] + new_text.split("\n")
        cursor = span.end
    out += lines[cursor:]
    return "\n".join(out), report
