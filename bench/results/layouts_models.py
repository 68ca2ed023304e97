"""Tables with one row (or one group of rows) per benchmark model: training, ranking stability, HIB at N = 200.

Same contract as `layouts`: `render(table) -> str` and `parse(text) -> table` are inverses. Every row
carries `model`, so a table splits back into the models' step JSON files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .layouts import COST_ORDER
from .tables import (Row, Table, TableError, bold, f, frac, need, number, numbers, pct, plain, ratio_text, secs,
                     split_table, table_lines)


def _check_header(found: list[str], wanted: list[str], what: str) -> None:
    if found != wanted:
        raise TableError(f"{what}: header {' | '.join(found)!r}, expected {' | '.join(wanted)!r}")


@dataclass(frozen=True)
class Trained:
    """`prunehead finetune --recipe`: the command, test accuracy (bold under `target`) and wall time."""

    target: float = 0.9

    def header(self) -> list[str]:
        return ["model", "command", "test accuracy", "wall time"]

    def render(self, table: Table) -> str:
        rows = []
        for r in table["rows"]:
            acc = r["correct"] / r["samples"]
            rows.append([f"`{r['model']}`", f"`{r['command']}`",
                         f"{bold(pct(acc, 1) + ' %', acc < self.target)} ({r['correct']}/{r['samples']})",
                         f"{secs(r['wall_s'], thousands=True)} s"])
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "trained")
        rows = []
        for cells in body:
            need(cells, 4, "trained row")
            counts = re.search(r"\((\d+)/(\d+)\)", cells[2])
            if not counts:
                raise TableError(f"trained: cannot read 'ACC % (CORRECT/SAMPLES)' from {cells[2]!r}")
            rows.append({"model": cells[0].strip("`"), "command": cells[1].strip("`"), "correct": int(counts[1]),
                         "samples": int(counts[2]), "wall_s": number(cells[3])})
        return {"rows": rows}


@dataclass(frozen=True)
class Stability:
    """`split_half_spearman` of each score file (16 samples), one row per model; `-` where none."""

    scorers: tuple[str, ...] = COST_ORDER

    def header(self) -> list[str]:
        return ["model", *self.scorers]

    def render(self, table: Table) -> str:
        rows = [[r["model"], *(f(r.get(s), 2) for s in self.scorers)] for r in table["rows"]]
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "stability")
        rows = []
        for cells in body:
            need(cells, len(self.header()), "stability row")
            rows.append({"model": cells[0], **{s: number(c) for s, c in zip(self.scorers, cells[1:])}})
        return {"rows": rows}


HALF = "half per layer"


def point_key(label: str) -> str:
    """'40 % global (9)' -> 'global 0.4'; 'half per layer (3 of 6)' -> 'half per layer'."""
    text = plain(label)
    if text.startswith(HALF):
        return HALF
    return f"global {ratio_text(frac(numbers(text)[0]))}"


@dataclass(frozen=True)
class Hib200:
    """HIB with 16 and 200 samples beside attention, attattr and random at the paper's points, per model.

    On the `claims` rows the point, HIB-200 and a baseline that beats HIB-200 (the better of the two) are bold.
    """

    claims: tuple[str, ...] = ("global 0.4", HALF)
    columns: tuple[str, ...] = ("hib16", "hib200", "attention", "attattr")

    def header(self) -> list[str]:
        return ["model (unpruned)", "point", "hib, 16 samples", "**hib, 200 samples**", "attention", "attattr",
                "random (5 seeds)"]

    def _cells(self, r: Row) -> list[str]:
        claim = r["key"] in self.claims
        rival = max(("attention", "attattr"), key=lambda s: -1 if r.get(s) is None else r[s])
        beats = claim and r.get(rival) is not None and r.get("hib200") is not None and r[rival] > r["hib200"]
        cells = [bold(r["label"], claim)]
        for s in self.columns:
            text = "-" if r.get(s) is None else f"{pct(r[s], 2)} %"
            cells.append(bold(text, (s == "hib200" and claim) or (s == rival and beats)))
        band = "-" if r.get("random") is None else f"{pct(r['random'], 1)} ± {pct(r['random_std'], 1)} %"
        return cells + [band]

    def render(self, table: Table) -> str:
        rows, last = [], None
        for r in table["rows"]:
            first = f"{r['model']} ({pct(r['unpruned'], 0)} %)" if r["model"] != last else ""
            rows.append([first, *self._cells(r)])
            last = r["model"]
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "hib200")
        rows, model, unpruned = [], None, None
        for cells in body:
            need(cells, 7, "hib200 row")
            if cells[0]:
                m = re.fullmatch(r"(\S+) \(([\d.]+) %\)", cells[0])
                if not m:
                    raise TableError(f"hib200: cannot read 'MODEL (UNPRUNED %)' from {cells[0]!r}")
                model, unpruned = m[1], frac(float(m[2]))
            if model is None:
                raise TableError("hib200: the first row must name its model")
            band = numbers(cells[6])
            row: Row = {"model": model, "unpruned": unpruned, "key": point_key(cells[1]), "label": plain(cells[1])}
            row.update({s: frac(number(c)) for s, c in zip(self.columns, cells[2:6])})
            row.update(random=frac(band[0]) if band else None, random_std=frac(band[1]) if band else None)
            rows.append(row)
        return {"rows": rows}
