"""Figures out of prunehead's outputs (train.json, score files, curve.json, frontier.json, report.json,
export.json), in the table shapes of `layouts*`: accuracies as fractions, times in seconds.

Each function returns (figures by part, extra): `extra` holds figures no table shows (prose numbers).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .layouts import COST_ORDER
from .layouts_models import HALF
from .tables import Row, percent_g, ratio_text

if TYPE_CHECKING:
    from .steps import Run

Figures = tuple[dict[str, Any], dict[str, Any]]
PARTS = {"synth": (), "train": ("trained",), "scores": ("cost", "stability"), "curves": ("global", "per-layer",
         "headline"), "hib64": ("hib64",), "iterative": ("iterative",), "budget": ("budget",), "both": ("both",),
         "frontier": ("frontier",), "goal": ("goal",), "hib200": ("hib200",)}  # what each step's figures hold


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _metric(metrics: dict[str, Any] | None) -> float | None:
    return None if metrics is None else metrics.get("accuracy")


def train(r: Run, argv: tuple[str, ...], walls: dict[str, float]) -> Figures:
    record = _read(r.net / "train.json")
    final = record["final"]
    row = {"model": r.model.name, "command": shlex.join(argv), "correct": round(final["accuracy"] * final["samples"]),
           "samples": final["samples"], "wall_s": round(walls["finetune"], 1)}
    history = [h.get("accuracy", h.get("wer")) for h in record["history"]]
    return {"trained": {"rows": [row]}}, {"history": history, "train_wall_seconds": record.get("wall_seconds")}


def _passes(scorer: str, score: dict[str, Any]) -> int | None:
    layers, heads, steps = score["num_layers"], score["num_heads"], score.get("params", {}).get("steps")
    return {"occlusion": layers * heads + 1, "attattr": layers * (steps or 20),
            "hib": layers * steps if steps else None}.get(scorer)


def scores(r: Run, walls: dict[str, float]) -> Figures:
    files = {s: _read(r.scores(s)) for s in r.model.scorers}
    cost = [{"key": s, "wall_s": round(walls[f"score-{s}"], 1), "passes": _passes(s, files[s])}
            for s in COST_ORDER if s in files]
    split_half = {"model": r.model.name, **{s: files[s].get("split_half_spearman") for s in COST_ORDER if s in files}}
    extra = {"ffn_wall_s": round(walls["score-ffn"], 1)} if "score-ffn" in walls else {}
    return {"cost": {"rows": cost}, "stability": {"rows": [split_half]}}, extra


def _points(curve: dict[str, Any], names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The curve of each score file by the name given here (the file order of the sweep), and random."""
    keys = [k for k in curve["curves"] if k != "random"]
    return {**dict(zip(names, (curve["curves"][k] for k in keys))), "random": curve["curves"]["random"]}


def _value(point: dict[str, Any], wer: bool) -> float:
    return point["wer"] if wer and "wer" in point else (1 - point["accuracy"] if wer else point["accuracy"])


def _curve_rows(curve: dict[str, Any], names: list[str], per_layer: bool = False, wer: bool = False) -> list[Row]:
    points, rows = _points(curve, names), []
    for i, rand in enumerate(points["random"]):
        row: Row = {"key": str(int(rand["x"])) if per_layer else ratio_text(rand["x"]),
                    "removed": rand["heads_removed"]}
        row.update({n: _value(points[n][i], wer) for n in names})
        row.update(random=_value(rand, wer), random_std=rand.get("std", 0.0))
        rows.append(row)
    return rows


def _shape(r: Run) -> tuple[int, int]:
    score = _read(r.scores(r.model.scorers[0]))
    return score["num_layers"], score["num_heads"]


def curves(r: Run) -> Figures:
    names, wer = list(r.model.scorers), r.model.target == "asr"
    glob = _read(r.work / "sweeps" / "global" / "curve.json")
    figures: dict[str, Any] = {"global": {"rows": _curve_rows(glob, names, wer=wer)}}
    if wer:
        return figures, {}
    per = _read(r.work / "sweeps" / "per-layer" / "curve.json")
    figures["per-layer"] = {"rows": _curve_rows(per, names, per_layer=True)}
    figures["headline"] = {"rows": _headline(r, figures, glob["unpruned"]["accuracy"])}
    return figures, {"unpruned": glob["unpruned"]}


def _headline(r: Run, figures: dict[str, Any], unpruned: float) -> list[Row]:
    """The paper's points: `headline` global and half the heads of every layer; retained = metric / unpruned."""
    layers, heads = _shape(r)
    paper = r.model.headline == "paper"
    at = {"global": [x for x in figures["global"]["rows"] if abs(float(x["key"]) - r.s.headline) < 1e-9],
          "per-layer": [x for x in figures["per-layer"]["rows"] if int(x["key"]) == heads // 2]}
    rows = []
    for key, found in at.items():
        if not found:
            continue
        point = found[0]
        ranked = sorted(r.model.scorers, key=lambda s: -point[s])  # stable: ties keep the scorer order
        if key == "global":
            label = f"{percent_g(r.s.headline)} % global ({point['removed']} of {layers * heads} heads)"
        else:
            label = f"half per layer ({heads // 2} of {heads}{')' if paper else ' per layer)'}"
        keep = {n: point[n] / unpruned for n in (*ranked, "random", "random_std")}
        row: Row = {"key": key, "label": label, "best": ranked[0]}
        if paper:
            second = ranked[1] if len(ranked) > 1 and keep[ranked[1]] >= 1.0 else None
            row.update(best_acc=point[ranked[0]], best_retained=keep[ranked[0]], second=second,
                       second_retained=keep[second] if second else None, hib=point.get("hib"),
                       hib_retained=keep.get("hib"), random=point["random"], random_std=point["random_std"],
                       random_retained=keep["random"])
        else:
            row.update(best_retained=keep[ranked[0]], hib=keep.get("hib"), random=keep["random"],
                       random_std=keep["random_std"])
        rows.append(row)
    return rows


def hib64(r: Run) -> Figures:
    curve = _read(r.work / "sweeps" / "hib64" / "curve.json")
    rows = [{"key": x["key"], "hib16": x["hib16"], "hib64": x["hib64"], "random": x["random"]}
            for x in _curve_rows(curve, ["hib16", "hib64"]) if float(x["key"]) >= r.s.headline - 1e-9]
    return {"hib64": {"rows": rows}}, {}


def iterative(r: Run) -> Figures:
    folder = r.work / "pruned"
    reports = {n: _read(folder / n / "report.json") for n in
               ("gradient-oneshot", "gradient-rounds", "hib-rounds", "hib-oneshot-recovered")}
    after = [x["heads_removed_total"] for x in reports["hib-rounds"]["rounds"]]
    rows = []
    for scorer, oneshot in (("gradient", "gradient-oneshot"), ("hib", "hib-oneshot-recovered")):
        row: Row = {"key": scorer, "one_shot": _metric(reports[oneshot]["metrics_after"])}
        for i, step in enumerate(reports[f"{scorer}-rounds"]["rounds"]):
            row[f"step_{i + 1}"] = _metric(step.get("metrics"))
        recovered = reports[oneshot].get("metrics_after_recovery")
        row.update(recovered=_metric(recovered),
                   recovery_s=reports[oneshot]["recovery"]["wall_seconds"] if recovered else None)
        rows.append(row)
    return {"iterative": {"after_heads": after, "rows": rows}}, {}


def _budget_row(report: dict[str, Any]) -> Row:
    search = report["max_drop"]
    return {"heads": report["heads_removed"], "neurons": (report.get("ffn") or {}).get("neurons_removed", 0),
            "val_before": _metric(search["unpruned"]), "val_after": _metric(search["chosen"]),
            "test_before": _metric(report["metrics_before"]), "test_after": _metric(report["metrics_after"]),
            "macs": report["macs_ratio"], "probes": len(search["probes"])}


def _sizes(report: dict[str, Any]) -> dict[str, int]:
    return {"n_validation": report["selection"]["samples"], "n_test": report["data"]["samples"]}


def budget(r: Run, names: list[str]) -> Figures:
    folder = r.work / "budget"
    reports = {n: _read(folder / n / "report.json") for n in (*names, "auto")}
    rows = [{"key": n, "chose": None, **_budget_row(reports[n])} for n in names]
    rows.append({"key": "auto", "chose": reports["auto"]["auto"]["chosen"], **_budget_row(reports["auto"])})
    return {"budget": {**_sizes(reports["auto"]), "rows": rows}}, {}


def both(r: Run, ranking: str) -> Figures:
    report = _read(r.work / "budget" / "both" / "report.json")
    row = {"model": r.model.name, "key": ranking, "ffn_scorer": "taylor", **_budget_row(report)}
    return {"both": {**_sizes(report), "rows": [row]}}, {}


def frontier(r: Run) -> Figures:
    result = _read(r.work / "sweeps" / "frontier" / "frontier.json")
    rows = []
    for p in result["points"]:
        row: Row = {"key": f"h{p['head_ratio']:.3g}-f{p['ffn_ratio']:.3g}", "head_ratio": p["head_ratio"],
                    "ffn_ratio": p["ffn_ratio"], "heads": p["heads_removed"], "neurons": p["neurons_removed"],
                    "accuracy": p["accuracy"], "macs": p["macs"], "mac_fraction": p["mac_fraction"]}
        for b in ("1", "8"):
            row[f"ms_{b}"], row[f"speedup_{b}"] = p["latency_ms"][b], p["speedup"][b]
        optimal = (["MACs"] if p["pareto"] else []) + [f"batch {b}" for b in ("1", "8") if p["pareto_speedup"][b]]
        rows.append({**row, "pareto": ", ".join(optimal)})
    dense = result["latency"]["dense_ms"]
    return {"frontier": {"dense_macs": result["dense_macs"], "seconds": result["seconds"], "dense_ms_1": dense["1"],
                         "dense_ms_8": dense["8"], "unpruned": result["unpruned"]["accuracy"], "rows": rows}}, {}


def goal(r: Run, plans: tuple[tuple[float, float], ...], walls: dict[str, float]) -> Figures:
    rows = []
    for head, ffn in plans:
        name = f"goal-h{head:g}-f{ffn:g}"
        report, export = _read(r.work / "pruned" / name / "report.json"), _read(r.work / "onnx" / name / "export.json")
        row: Row = {"model": r.model.name, "key": f"h{head:g}-f{ffn:g}", "head_ratio": head, "ffn_ratio": ffn,
                    "heads": report["heads_removed"], "neurons": report["ffn"]["neurons_removed"],
                    "macs": report["macs_ratio"], "params": report["params_ratio"],
                    "before": _metric(report["metrics_before"]), "after": _metric(report["metrics_after"]),
                    "recovered": _metric(report["metrics_after_recovery"]),
                    "recovery_s": report["recovery"]["wall_seconds"]}
        for b in (1, 8):
            timing = next(t for t in export["latency"]["rows"] if t["batch"] == b)
            row.update({f"ms_{b}": timing["model_ms"], f"base_ms_{b}": timing["unpruned_ms"],
                        f"speedup_{b}": timing["speedup"]})
        rows.append({**row, "ort_accuracy": _metric(export["checks"]["data"]["metrics"]["export"]),
                     "max_diff": export["checks"]["export"]["max_abs_diff"]})
    return {"goal": {"rows": rows}}, {}


def _spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (ties broken by position, as `prunehead` ranks heads)."""
    def ranks(xs: list[float]) -> list[int]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0] * len(xs)
        for rank, i in enumerate(order):
            out[i] = rank
        return out
    ra, rb, n = ranks(a), ranks(b), len(a)
    return round(1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1)), 4)


def hib200(r: Run, walls: dict[str, float]) -> Figures:
    names = ["hib16", "hib200", "attention", "attattr"]
    glob = _read(r.work / "sweeps" / "hib200-global" / "curve.json")
    per = _read(r.work / "sweeps" / "hib200-per-layer" / "curve.json")
    layers, heads = _shape(r)
    unpruned = glob["unpruned"]["accuracy"]
    rows = []
    for i, x in enumerate(_curve_rows(glob, names)):
        of = f" of {layers * heads} heads" if i == 0 else ""
        label = f"{percent_g(float(x['key']))} % global ({x['removed']}{of})"
        rows.append({"model": r.model.name, "unpruned": unpruned, "key": f"global {x['key']}", "label": label,
                     **{n: x[n] for n in names}, "random": x["random"], "random_std": x["random_std"]})
    for x in _curve_rows(per, names):
        k = x["removed"] // layers
        rows.append({"model": r.model.name, "unpruned": unpruned, "key": HALF, "label": f"{HALF} ({k} of {heads})",
                     **{n: x[n] for n in names}, "random": x["random"], "random_std": x["random_std"]})
    flat = {n: [v for row in _read(r.scores(s))["scores"] for v in row]
            for n, s in (("hib16", "hib"), ("hib200", "hib200"), ("attention", "attention"), ("attattr", "attattr"))}
    extra = {"split_half_spearman": _read(r.scores("hib200")).get("split_half_spearman"),
             "wall_s": round(walls["score-hib200"], 1),
             "spearman_with_hib200": {n: _spearman(flat["hib200"], flat[n]) for n in ("hib16", "attention", "attattr")}}
    return {"hib200": {"rows": rows}}, extra
