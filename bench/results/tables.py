"""Markdown tables to cells and back, and the number formats of docs/results.md.

A *table* (the figures one block renders) is a dict: `rows`, a list of dicts that each carry a `key`
(unique in the table, and `model` in tables that span models), plus optional scalars. Every layout
renders a table to markdown and parses its own markdown back to the same table, so a block round-trips.
"""

from __future__ import annotations

import re
from typing import Any

Table = dict[str, Any]
Row = dict[str, Any]

NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


class TableError(ValueError):
    """A table that does not have the shape its layout expects (one line, names the problem)."""


def row_line(cells: list[str], empty: str = " ") -> str:
    """`| a | b |`; an empty cell is written `empty` wide (the document has both `| |` and `|  |`)."""
    return "|" + "|".join(f" {c} " if c else empty for c in cells) + "|"


def table_lines(header: list[str], rows: list[list[str]], empty: str = " ") -> list[str]:
    """The header, the `|---|` rule and one line per row."""
    return [row_line(header), "|---" * len(header) + "|", *(row_line(r, empty) for r in rows)]


def split_table(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(header cells, row cells, the lines after the table) of a block's text."""
    lines = text.split("\n")
    body = [i for i, line in enumerate(lines) if line.startswith("|")]
    if len(body) < 2 or not lines[body[1]].startswith("|---"):
        raise TableError("no markdown table (a header line and a |---| rule)")
    end = body[0]
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    cells = [_cells(line) for line in lines[body[0]:end]]
    return cells[0], cells[2:], lines[end:]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def plain(cell: str) -> str:
    """The cell without `**` emphasis."""
    return cell.replace("**", "").strip()


def numbers(cell: str) -> list[float]:
    """Every number in a cell, in order (`1,578` is one number)."""
    return [float(m.replace(",", "")) for m in NUMBER.findall(plain(cell))]


def number(cell: str) -> float | None:
    """The first number of a cell; None for `-` or an empty cell."""
    found = numbers(cell)
    return found[0] if found else None


def bold(text: str, on: bool = True) -> str:
    return f"**{text}**" if on and text else text


def f(value: float | None, digits: int) -> str:
    """0.98765 -> '0.9877' (digits 4); None -> '-'."""
    return "-" if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int) -> str:
    """A fraction as a percentage number without the sign: 0.9233 -> '92.33' (digits 2)."""
    return "-" if value is None else f"{value * 100:.{digits}f}"


def frac(value: float | None, scale: float = 100) -> float | None:
    """A parsed percentage back to a fraction (rounded: 91.67 -> 0.9167, not 0.9167000000000001)."""
    return None if value is None else round(value / scale, 10)


def secs(value: float | None, thousands: bool = False) -> str:
    """Seconds to 0.1 s, without a trailing `.0`: 9.66 -> '9.7', 879.0 -> '879', 1578 -> '1,578'."""
    if value is None:
        return "-"
    value = round(value, 1)
    text = f"{value:,.1f}" if thousands else f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def ratio_text(x: float) -> str:
    """0.4 -> '0.4', 0.0 -> '0.0' (how the curve tables write ratios)."""
    return repr(round(float(x), 10))


def percent_g(x: float) -> str:
    """0.4 -> '40', 0.875 -> '87.5' (a ratio as a percentage in prose style)."""
    return f"{x * 100:g}"


def count(n: float) -> str:
    """12_300_000 -> '12.3 M' (as `prunehead sweep` writes MACs)."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}"


def uncount(text: str) -> float:
    """'811 M' -> 811e6."""
    scale = {"T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3}
    value, _, unit = plain(text).partition(" ")
    return float(value) * scale.get(unit.strip(), 1.0)


def need(cells: list[str], width: int, what: str) -> None:
    if len(cells) != width:
        raise TableError(f"{what}: {len(cells)} cells where the layout has {width}: {' | '.join(cells)}")
