"""The tables of pruning plans: accuracy budgets, the heads x FFN frontier and the speed goal.

Same contract as `layouts`: `render(table) -> str` and `parse(text) -> table` are inverses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .tables import (Row, Table, TableError, bold, count, f, frac, need, number, numbers, pct, percent_g, plain,
                     secs, split_table, table_lines, uncount)


def _check_header(found: list[str], wanted: list[str], what: str) -> None:
    if found != wanted:
        raise TableError(f"{what}: header {' | '.join(found)!r}, expected {' | '.join(wanted)!r}")


def _change(before: float | None, after: float | None) -> str:
    return f"{pct(before, 2)} -> {pct(after, 2)} %"


@dataclass(frozen=True)
class Budget:
    """`prune --max-drop`: per scorer (and auto), or per model with `--units both` (`by_model`)."""

    by_model: bool = False

    def header(self, table: Table) -> list[str]:
        return ["model: ranking" if self.by_model else "scorer", "heads removed", "FFN neurons removed",
                f"validation ({table.get('n_validation')})", f"test ({table.get('n_test')})", "MACs", "probes"]

    def _label(self, r: Row) -> str:
        if self.by_model:
            return f"{r['model']}: {r['key']} heads + {r['ffn_scorer']} neurons"
        return f"{r['key']} (chose {r['chose']})" if r.get("chose") else r["key"]

    def render(self, table: Table) -> str:
        rows = [[self._label(r), str(r["heads"]), str(r["neurons"]), _change(r["val_before"], r["val_after"]),
                 _change(r["test_before"], r["test_after"]), f(r["macs"], 3), str(r["probes"])]
                for r in table["rows"]]
        return "\n".join(table_lines(self.header(table), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        table: Table = {"n_validation": int(number(header[3])), "n_test": int(number(header[4]))} \
            if len(header) == 7 else {}
        _check_header(header, self.header(table), "budget")
        rows = []
        for cells in body:
            need(cells, 7, "budget row")
            label = plain(cells[0])
            if self.by_model:
                m = re.fullmatch(r"(\S+): (\S+) heads \+ (\S+) neurons", label)
                if not m:
                    raise TableError(f"budget: cannot read {label!r} as 'MODEL: SCORER heads + FFN_SCORER neurons'")
                row: Row = {"model": m[1], "key": m[2], "ffn_scorer": m[3]}
            else:
                m = re.fullmatch(r"(\S+)(?: \(chose (\S+)\))?", label)
                row = {"key": m[1], "chose": m[2]} if m else {"key": label, "chose": None}
            val, test = numbers(cells[3]), numbers(cells[4])
            row.update(heads=int(number(cells[1])), neurons=int(number(cells[2])), val_before=frac(val[0]),
                       val_after=frac(val[1]), test_before=frac(test[0]), test_after=frac(test[1]),
                       macs=number(cells[5]), probes=int(number(cells[6])))
            rows.append(row)
        return {**table, "rows": rows}


BATCHES = ("1", "8")
DENSE = re.compile(r"dense model: (\S+ \S+) MACs on ([\d.]+) s of input; ([\d.]+) ms at batch 1, ([\d.]+) ms at "
                   r"batch 8; unpruned accuracy ([\d.]+)")


@dataclass(frozen=True)
class Frontier:
    """`prunehead sweep --ffn-ratios --latency` (its own frontier.md format) and the dense-model line."""

    def header(self) -> list[str]:
        return ["head ratio", "FFN ratio", "heads removed", "neurons removed", "accuracy", "MACs",
                *(f"ms @ batch {b} (speedup)" for b in BATCHES), "Pareto"]

    def render(self, table: Table) -> str:
        rows = []
        for r in table["rows"]:
            cells = [f"{r['head_ratio']:.3g}", f"{r['ffn_ratio']:.3g}", str(r["heads"]), str(r["neurons"]),
                     f(r["accuracy"], 4), f"{count(r['macs'])} ({r['mac_fraction']:.1%})"]
            cells += [f"{r[f'ms_{b}']:.2f} ({r[f'speedup_{b}']:.2f}x)" for b in BATCHES]
            rows.append(cells + [r["pareto"]])
        dense = (f"dense model: {count(table['dense_macs'])} MACs on {table['seconds']:g} s of input; "
                 + ", ".join(f"{table[f'dense_ms_{b}']:.2f} ms at batch {b}" for b in BATCHES)
                 + f"; unpruned accuracy {table['unpruned']:.4f}")
        return "\n".join(table_lines(self.header(), rows, empty="  ") + ["", dense])

    def parse(self, text: str) -> Table:
        header, body, after = split_table(text)
        _check_header(header, self.header(), "frontier")
        dense = DENSE.fullmatch("\n".join(after).strip())
        if not dense:
            raise TableError("frontier: the table must be followed by its 'dense model: ...' line")
        rows = []
        for cells in body:
            need(cells, 9, "frontier row")
            macs, _, fraction = cells[5].partition(" (")
            row: Row = {"key": f"h{cells[0]}-f{cells[1]}", "head_ratio": float(cells[0]),
                        "ffn_ratio": float(cells[1]), "heads": int(cells[2]), "neurons": int(cells[3]),
                        "accuracy": float(cells[4]), "macs": uncount(macs),
                        "mac_fraction": frac(float(fraction.rstrip("%)")))}
            for b, cell in zip(BATCHES, cells[6:8]):
                row[f"ms_{b}"], row[f"speedup_{b}"] = numbers(cell)
            rows.append({**row, "pareto": cells[8]})
        return {"dense_macs": uncount(dense[1]), "seconds": float(dense[2]), "dense_ms_1": float(dense[3]),
                "dense_ms_8": float(dense[4]), "unpruned": float(dense[5]), "rows": rows}


@dataclass(frozen=True)
class Goal:
    """Prune heads + FFN, recover one epoch, export: MACs, params, accuracy, ONNX Runtime latency."""

    def header(self) -> list[str]:
        return ["model", "plan", "MACs", "params", "test accuracy: unpruned -> pruned -> 1 epoch", "recovery",
                "ORT batch 1", "ORT batch 8", "ORT test accuracy (max diff)"]

    def render(self, table: Table) -> str:
        rows = []
        for r in table["rows"]:
            plan = (f"heads {percent_g(r['head_ratio'])} % global, FFN {percent_g(r['ffn_ratio'])} % per layer "
                    f"({r['heads']} heads, {r['neurons']} neurons)")
            acc = f"{pct(r['before'], 2)} -> {pct(r['after'], 2)} -> {bold(pct(r['recovered'], 2) + ' %')}"
            ort = [f"{r[f'ms_{b}']:.1f} vs {r[f'base_ms_{b}']:.1f} ms: {bold(format(r[f'speedup_{b}'], '.2f') + 'x')}"
                   for b in BATCHES]
            rows.append([r["model"], plan, f(r["macs"], 3), f(r["params"], 3), acc, f"{secs(r['recovery_s'])} s",
                         *ort, f"{pct(r['ort_accuracy'], 2)} % ({r['max_diff']:.1e})"])
        return "\n".join(table_lines(self.header(), rows))

    def parse(self, text: str) -> Table:
        header, body, _ = split_table(text)
        _check_header(header, self.header(), "goal")
        rows = []
        for cells in body:
            need(cells, 9, "goal row")
            head, ffn, heads, neurons = numbers(cells[1])
            acc = numbers(cells[4])
            row: Row = {"model": plain(cells[0]), "key": f"h{frac(head):g}-f{frac(ffn):g}",
                        "head_ratio": frac(head), "ffn_ratio": frac(ffn), "heads": int(heads), "neurons": int(neurons),
                        "macs": number(cells[2]), "params": number(cells[3]), "before": frac(acc[0]),
                        "after": frac(acc[1]), "recovered": frac(acc[2]), "recovery_s": number(cells[5])}
            for b, cell in zip(BATCHES, cells[6:8]):
                row[f"ms_{b}"], row[f"base_ms_{b}"], row[f"speedup_{b}"] = numbers(cell)
            ort = numbers(cells[8])
            rows.append({**row, "ort_accuracy": frac(ort[0]), "max_diff": ort[1]})
        return {"rows": rows}
