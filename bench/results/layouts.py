"""The tables of one model: pruning curves, headline points, scoring cost, iterative pruning.

Each layout is a small frozen dataclass with `render(table) -> str` and `parse(text) -> table`; the two
are inverses on every block of docs/results.md (tests/test_results.py). Accuracies are stored as
fractions, times in seconds; emphasis (`**`) follows rules written here, never the JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .tables import (Row, Table, TableError, bold, f, frac, need, number, numbers, pct, plain, ratio_text,
                     secs, split_table, table_lines)

SCORERS = ("hib", "attattr", "gradient", "occlusion", "attention")
COST_ORDER = ("gradient", "attention", "occlusion", "attattr", "hib")


def _check_header(found: list[str], wanted: list[str], what: str) -> None:
    if found != wanted:
        raise TableError(f"{what}: header {' | '.join(found)!r}, expected {' | '.join(wanted)!r}")


@dataclass(frozen=True)
class Curve:
    """`prunehead sweep`: one row per ratio (or K heads per layer), one column per scorer, random's band.

    bold_x: the global ratio whose row is bold; half: per layer, mark and bold K = H / 2 ("3 (half)");
    percent: cells in % with one decimal (the ASR WER table), random's band without `±` where std is 0;
    bold_best: bold the lowest scorer cell of the table (WER).
    """

    scorers: tuple[str, ...] = SCORERS
    per_layer: bool = False
    percent: bool = False
    suffix: str = ""
    random_header: str = "random"
    bold_x: float | None = None
    half: bool = False
    bold_best: bool = False

    def header(self) -> list[str]:
        return ["heads/layer" if self.per_layer else "ratio", "removed",
                *(s + self.suffix for s in self.scorers), self.random_header]

    def _value(self, v: float | None) -> str:
        return f"{pct(v, 1)} %" if self.percent and v is not None else f(v, 4)

    def _band(self, mean: float | None, std: float | None) -> str:
        if mean is None:
            return "-"
        if self.percent:
            return f"{pct(mean, 1)} %" if not std else f"{pct(mean, 1)} ± {pct(std, 1)} %"
        return f"{f(mean, 4)} ± {f(std, 4)}"

    def render(self, table: Table) -> str:
        rows = table["rows"]
        heads = max(int(r["key"]) for r in rows) + 1 if self.per_layer and rows else 0
        values = [r.get(s) for r in rows for s in self.scorers if r.get(s) is not None]
        best = min(values) if self.bold_best and values else None
        lines = []
        for r in rows:
            label, emphasis = r["key"], False
            if self.per_layer and self.half and 2 * int(r["key"]) == heads:
                label, emphasis = f"{label} (half)", True
            if not self.per_layer and self.bold_x is not None and abs(float(r["key"]) - self.bold_x) < 1e-9:
                emphasis = True
            cells = [label, str(r["removed"])]
            cells += [bold(self._value(r.get(s)), not emphasis and r.get(s) is not None and r.get(s) == best)
                      for s in self.scorers]
            cells.append(self._band(r.get("random"), r.get("random_std")))
            lines.append([bold(c, emphasis) for c in cells] if emphasis else cells)
        return "\n".join(table_lines(self.header(), lines))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "curve")
        rows = []
        for cells in body:
            need(cells, len(self.header()), "curve row")
            first = plain(cells[0]).split(" ")[0]
            row: Row = {"key": str(int(float(first))) if self.per_layer else ratio_text(float(first)),
                        "removed": int(number(cells[1]))}
            for s, cell in zip(self.scorers, cells[2:-1]):
                v = number(cell)
                row[s] = frac(v) if self.percent else v
            band = numbers(cells[-1])
            scale = 100 if self.percent else 1
            row["random"] = frac(band[0], scale) if band else None
            row["random_std"] = (frac(band[1], scale) if len(band) > 1 else 0.0) if band else None
            rows.append(row)
        return {"rows": rows}


@dataclass(frozen=True)
class Headline:
    """The paper's two points (40 % global, half per layer) on a Whisper model: retained fractions."""

    def header(self) -> list[str]:
        return ["point", "best scorer", "its accuracy (retained)", "hib", "random"]

    def render(self, table: Table) -> str:
        rows = [[r["label"], r["best"], f"{pct(r['best_retained'], 1)} %", f"{pct(r['hib'], 1)} %",
                 f"{pct(r['random'], 1)} ± {pct(r['random_std'], 1)} %"] for r in table["rows"]]
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "headline")
        rows = []
        for cells in body:
            need(cells, 5, "headline row")
            band = numbers(cells[4])
            rows.append({"key": "global" if "global" in cells[0] else "per-layer", "label": plain(cells[0]),
                         "best": plain(cells[1]), "best_retained": frac(number(cells[2])),
                         "hib": frac(number(cells[3])), "random": frac(band[0]), "random_std": frac(band[1])})
        return {"rows": rows}


PAPER = {"global": ("83.36 % of 96.39 %", "86.5 % retained"), "per-layer": ("82.76 %", "85.9 % retained")}
BEST = re.compile(r"^(\S+) ([\d.]+) %: ([\d.]+) % retained(?: \((\S+) ([\d.]+) %\))?$")


@dataclass(frozen=True)
class HeadlinePaper:
    """The paper's two points beside wav2vec 2.0 base's figures: accuracy and retained fraction; the
    runner-up is named when it also keeps all of the unpruned accuracy. The global row's retained is bold."""

    def header(self) -> list[str]:
        return ["point", "paper (wav2vec 2.0 base, KS)", "best here", "hib", "random"]

    def render(self, table: Table) -> str:
        rows = []
        for r in table["rows"]:
            em = r["key"] == "global"
            prefix, kept = PAPER[r["key"]]
            best = f"{r['best']} {pct(r['best_acc'], 2)} %: {bold(pct(r['best_retained'], 1) + ' % retained', em)}"
            if r.get("second"):
                best += f" ({r['second']} {pct(r['second_retained'], 1)} %)"
            rows.append([r["label"], f"{prefix}: {bold(kept, em)}", best,
                         f"{pct(r['hib'], 2)} %: {pct(r['hib_retained'], 1)} %",
                         f"{pct(r['random'], 2)} ± {pct(r['random_std'], 2)} %: {pct(r['random_retained'], 1)} %"])
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "headline")
        rows = []
        for cells in body:
            need(cells, 5, "headline row")
            m = BEST.match(plain(cells[2]))
            if not m:
                raise TableError(f"headline: cannot read the best-scorer cell {cells[2]!r}")
            hib, rand = numbers(cells[3]), numbers(cells[4])
            rows.append({"key": "global" if "global" in cells[0] else "per-layer", "label": plain(cells[0]),
                         "best": m[1], "best_acc": frac(float(m[2])), "best_retained": frac(float(m[3])),
                         "second": m[4], "second_retained": frac(float(m[5])) if m[5] else None,
                         "hib": frac(hib[0]), "hib_retained": frac(hib[1]), "random": frac(rand[0]),
                         "random_std": frac(rand[1]), "random_retained": frac(rand[2])})
        return {"rows": rows}


PASSES = {"gradient": "1 forward + 1 backward", "attention": "1 forward", "occlusion": "L x H + 1 forwards ({n})",
          "attattr": "L x m forward + backward ({n})", "hib": "L x T forward + backward ({n}), batched and cached",
          "random": "0"}


@dataclass(frozen=True)
class Cost:
    """Scoring wall time per scorer (16 samples), with the passes per sample or without (`passes=False`)."""

    passes: bool = True

    def header(self) -> list[str]:
        return ["scorer", "wall time", "passes per sample"] if self.passes else ["scorer", "time"]

    def render(self, table: Table) -> str:
        rows = []
        for r in table["rows"]:
            cells = [r["key"], f"{secs(r['wall_s'])} s"]
            if self.passes:
                cells.append(PASSES.get(r["key"], "{n}").format(n=r.get("passes")))
            rows.append(cells)
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "cost")
        rows = []
        for cells in body:
            need(cells, len(self.header()), "cost row")
            row: Row = {"key": plain(cells[0]), "wall_s": number(cells[1])}
            if self.passes:
                count = re.search(r"\((\d+)\)", cells[2])
                row["passes"] = int(count[1]) if count else None
            rows.append(row)
        return {"rows": rows}


@dataclass(frozen=True)
class Transposed:
    """Curves with the ratios as columns (HIB at 16 vs 64 samples), in %; `bold` names cells (row, ratio)."""

    labels: tuple[tuple[str, str], ...] = (("hib16", "hib, 16 samples"), ("hib64", "hib, 64 samples"),
                                           ("random", "random (5 seeds)"))
    bold: tuple[tuple[str, str], ...] = ()

    def render(self, table: Table) -> str:
        points = table["rows"]
        header = ["ratio", *(p["key"] for p in points)]
        rows = [[label, *(bold(f"{pct(p.get(name), 2)} %" if p.get(name) is not None else "-",
                               (name, p["key"]) in self.bold) for p in points)] for name, label in self.labels]
        return "\n".join(table_lines(header, rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        if not header or header[0] != "ratio":
            raise TableError(f"transposed curve: header starts {header[:1]!r}, expected 'ratio'")
        points: list[Row] = [{"key": ratio_text(float(x))} for x in header[1:]]
        wanted = [label for _, label in self.labels]
        _check_header([plain(c[0]) for c in body], wanted, "transposed curve rows")
        for (name, _), cells in zip(self.labels, body):
            need(cells, len(header), "transposed curve row")
            for point, cell in zip(points, cells[1:]):
                point[name] = frac(number(cell))
        return {"rows": points}


@dataclass(frozen=True)
class Iterative:
    """One-shot vs `--rounds` pruning (metric after every round) vs one-shot plus recovery, in %."""

    def header(self, after: list[int]) -> list[str]:
        steps = " / ".join(str(a) for a in after)
        return ["scorer", "one-shot", f"{len(after)} steps: after {steps} heads", "one-shot + 1 epoch recovery"]

    def render(self, table: Table) -> str:
        after, rows = table["after_heads"], []
        for r in table["rows"]:
            steps = [pct(r.get(f"step_{i + 1}"), 2) for i in range(len(after))]
            trail = " / ".join(steps[:-1] + [bold(steps[-1] + " %")])
            rec = "" if r.get("recovered") is None else \
                f"{bold(pct(r['recovered'], 2) + ' %')} ({secs(r['recovery_s'])} s of training)"
            rows.append([r["key"], f"{pct(r['one_shot'], 2)} %", trail, rec])
        return "\n".join(table_lines(self.header(after), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        after = [int(n) for n in numbers(header[2])[1:]] if len(header) == 4 else []
        _check_header(header, self.header(after), "iterative")
        rows = []
        for cells in body:
            need(cells, 4, "iterative row")
            row: Row = {"key": plain(cells[0]), "one_shot": frac(number(cells[1]))}
            for i, v in enumerate(numbers(cells[2])):
                row[f"step_{i + 1}"] = frac(v)
            rec = numbers(cells[3])
            row["recovered"], row["recovery_s"] = (frac(rec[0]), rec[1]) if rec else (None, None)
            rows.append(row)
        return {"after_heads": after, "rows": rows}
