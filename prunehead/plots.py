"""Pictures and tables: head-score heat maps and sweep results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .experiments.curves import LOWER_IS_BETTER  # noqa: E402

SCORE_UNIT = "importance (higher = keep)"
PRUNED_MARK = "x"  # drawn over every pruned head; the title says what it means


def _pruned_cells(pruned: Any) -> list[tuple[int, int]]:
    """(layer, head) of every pruned head: `pruned` is a PruningPlan, {layer: heads} or a boolean keep mask."""
    if pruned is None:
        return []
    if hasattr(pruned, "pruned_heads"):  # a removed layer loses every head
        gone = {l: range(pruned.num_heads) for l in getattr(pruned, "pruned_layers", ())}
        pruned = {**pruned.pruned_heads, **gone}
    if isinstance(pruned, Mapping):
        return sorted((int(l), int(h)) for l, heads in pruned.items() for h in heads)
    keep = np.asarray(pruned, dtype=bool)  # (L, H), True = kept
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(~keep))]


def heatmap(scores: Any, path: str | Path, title: str = "", pruned: Any = None, unit: str = SCORE_UNIT) -> None:
    """An L x H heat map of head scores (layers down, heads across), written to `path` (PNG).

    The colour bar is labelled with `unit`; heads in `pruned` (a PruningPlan, {layer: heads} or a keep
    mask) are crossed out in red and counted in the title. Small grids (<= 64 heads) print each value.
    """
    fig = heatmap_figure(scores, title, pruned, unit)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def heatmap_figure(scores: Any, title: str = "", pruned: Any = None, unit: str = SCORE_UNIT) -> Any:
    """The matplotlib Figure `heatmap` saves (close it with `plt.close(fig)`)."""
    values = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=float)  # (L, H)
    L, H = values.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + 0.5 * H), max(3.0, 1.0 + 0.4 * L)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    if L * H <= 64:  # small grids: print the values
        for (l, h), value in np.ndenumerate(values):
            ax.text(h, l, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white", zorder=2)
    cells = _pruned_cells(pruned)
    if cells:
        ls, hs = zip(*cells)
        size = min(400.0, 2.4e4 / max(L, H) ** 2)  # about a cell's size
        ax.scatter(hs, ls, marker=PRUNED_MARK, s=size, c="red", linewidths=1.5, gid="pruned", zorder=1)
        title = f"{title}\n" if title else ""
        title += f"{PRUNED_MARK} = pruned ({len(cells)} of {L * H} heads)"
    _grid_axes(ax, L, H)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax).set_label(unit)
    fig.tight_layout()
    return fig


def _grid_axes(ax: Any, layers: int, heads: int) -> None:
    ax.set_xticks(range(heads))
    ax.set_yticks(range(layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")


def plot_curves(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Metric vs pruned fraction, one line per scorer, random as mean +/- std band."""
    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, points in result["curves"].items():
        xs = [p["pruned_fraction"] for p in points]
        ys = [p[metric] for p in points]
        if name == "random":
            std = [p.get("std", 0.0) for p in points]
            ax.plot(xs, ys, color="grey", linestyle="--", label="random (mean of 5 seeds)")
            ax.fill_between(xs, [y - s for y, s in zip(ys, std)], [y + s for y, s in zip(ys, std)],
                            color="grey", alpha=0.2)
        elif name == result.get("best"):
            ax.plot(xs, ys, marker="o", markersize=4, linewidth=2.5, label=f"{name} (best)")
        else:
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.axhline(result["unpruned"][metric], color="black", linewidth=0.8, linestyle=":", label="unpruned")
    ax.set_xlabel(f"fraction of heads removed ({result['scope'].replace('_', '-')})")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_table(result: dict[str, Any]) -> str:
    """A markdown table: one row per sweep point, one column per scorer."""
    metric = result["metric"]
    names = list(result["curves"])
    first = result["curves"][names[0]]
    x_name = "heads/layer" if result["scope"] == "per_layer" and isinstance(first[0]["x"], int) else "ratio"
    header = [f"{n} (best)" if n == result.get("best") else n for n in names]
    lines = [f"| {x_name} | removed | " + " | ".join(header) + " |", "|---" * (len(names) + 2) + "|"]
    for i, point in enumerate(first):
        cells = []
        for name in names:
            p = result["curves"][name][i]
            cells.append(f"{p[metric]:.4f} ± {p['std']:.4f}" if "std" in p else f"{p[metric]:.4f}")
        lines.append(f"| {point['x']} | {point['heads_removed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"



def plot_frontier(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """The metric vs the MAC fraction and, with latency, vs the speedup at each batch size: every grid point
    coloured by its FFN ratio, the Pareto-optimal points ringed and joined."""
    metric, points = result["metric"], result["points"]
    sizes = [str(b) for b in result["latency"]["batch_sizes"]] if result.get("latency") else []
    panels = [("mac_fraction", None, "fraction of the dense model's MACs")]
    panels += [("speedup", b, f"speedup over the dense model (ONNX Runtime, batch {b})") for b in sizes]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), dpi=120, squeeze=False)
    axes_of = [k for k in ("conv", "layer") if any(f"{k}_ratio" in p for p in points)]  # colour by those too

    def group(p: dict[str, Any]) -> tuple[float, ...]:
        return (p["ffn_ratio"], *(p.get(f"{k}_ratio", 0.0) for k in axes_of))

    ffn = sorted({group(p) for p in points})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(ffn)))
    for ax, (key, batch, label) in zip(axes[0], panels):
        x = [p[key] if batch is None else p[key][batch] for p in points]
        y = [p[metric] for p in points]
        for ratio, colour in zip(ffn, colours):
            mine = [i for i, p in enumerate(points) if group(p) == ratio]
            name = ", ".join([f"FFN {ratio[0]:g}", *(f"{k} {r:g}" for k, r in zip(axes_of, ratio[1:]))]) \
                if axes_of else f"FFN ratio {ratio[0]:g}"
            ax.scatter([x[i] for i in mine], [y[i] for i in mine], s=18, color=colour, label=name, zorder=2)
        best = sorted((x[i], y[i]) for i, p in enumerate(points)
                      if (p["pareto"] if batch is None else p["pareto_speedup"][batch]))
        ax.plot([b[0] for b in best], [b[1] for b in best], color="red", linewidth=1.2, marker="o", markersize=9,
                markerfacecolor="none", label="Pareto-optimal", gid="pareto", zorder=3)
        ax.axhline(result["unpruned"][metric], color="black", linewidth=0.8, linestyle=":", label="unpruned")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric} (lower is better)" if metric in LOWER_IS_BETTER else metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}\nheads ({result['scope'].replace('_', '-')}) x FFN neurons (per layer)" if title else
                 f"heads ({result['scope'].replace('_', '-')}) x FFN neurons (per layer)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def frontier_table(result: dict[str, Any]) -> str:
    """A markdown table of the frontier: one row per grid point; Pareto names the axes it is optimal on."""
    metric, points = result["metric"], result["points"]
    sizes = [str(b) for b in result["latency"]["batch_sizes"]] if result.get("latency") else []
    conv = any("conv_ratio" in p for p in points)
    layers = any("layer_ratio" in p for p in points)
    header = ["head ratio", "FFN ratio", *(["conv ratio"] if conv else []), *(["layer ratio"] if layers else []),
              "heads removed", "neurons removed", *(["channels removed"] if conv else []),
              *(["layers removed"] if layers else []), metric, "MACs"]
    header += [f"ms @ batch {b} (speedup)" for b in sizes] + ["Pareto"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for p in points:
        cells = [f"{p['head_ratio']:.3g}", f"{p['ffn_ratio']:.3g}", *([f"{p['conv_ratio']:.3g}"] if conv else []),
                 *([f"{p['layer_ratio']:.3g}"] if layers else []), str(p["heads_removed"]), str(p["neurons_removed"]),
                 *([str(p["channels_removed"])] if conv else []), *([str(p["layers_removed"])] if layers else []),
                 f"{p[metric]:.4f}", f"{_count(p['macs'])} ({p['mac_fraction']:.1%})"]
        cells += [f"{p['latency_ms'][b]:.2f} ({p['speedup'][b]:.2f}x)" for b in sizes]
        optimal = (["MACs"] if p["pareto"] else []) + [f"batch {b}" for b in sizes if p["pareto_speedup"][b]]
        lines.append("| " + " | ".join(cells + [", ".join(optimal)]) + " |")
    dense = f"dense model: {_count(result['dense_macs'])} MACs on {result['seconds']:g} s of input"
    if sizes:
        dense += "; " + ", ".join(f"{result['latency']['dense_ms'][b]:.2f} ms at batch {b}" for b in sizes)
    return "\n".join(lines) + f"\n\n{dense}; unpruned {metric} {result['unpruned'][metric]:.4f}\n"


def _count(n: float) -> str:
    """12_300_000 -> '12.3 M'."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}"


def plot_learning(history: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """`--method l0`'s training: the expected MAC fraction against its annealed target (left) and the
    distillation loss (right), per step."""
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    left.plot(steps, [h["expected_mac_fraction"] for h in history], label="expected MACs", gid="expected")
    left.plot(steps, [h["target"] for h in history], linestyle="--", color="black", label="target (annealed)")
    left.set_xlabel("step")
    left.set_ylabel("fraction of the dense MACs")
    left.legend(fontsize=8)
    right.plot(steps, [h["loss"] for h in history], color="tab:red")
    right.set_xlabel("step")
    right.set_ylabel("distillation loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title or "learned masks under a MAC budget", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
