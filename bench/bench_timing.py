"""How `prunehead` times ONNX graphs: each graph alone (the truth), in turns with a thread pool per session
(the method before 2026-12-07), and in turns sharing one pool in a process of its own (`time_in_turns` now).

    python bench/bench_timing.py                  # batch 1 and 8, 1 s of audio, 20 repeats
    python bench/bench_timing.py --repeats 40 --threads 2

The graphs: the 12 x 12 wav2vec2 of `recipes/w2v2-12x12-ks.toml` (random init: latency depends on shapes
only), unpruned, and pruned to the shape of the `--method l0 --target-macs 0.25` plan of docs/results.md
(layers 0-2 kept, 13 of their heads and 2,085 of their neurons gone, conv layers 0-6 at 94 / 67 / 108 / 115 /
125 / 127 / 128 of 128 channels). Per batch size: the median ms of each graph and their ratio under each
method. "alone" builds one session at a time (nothing else exists), so it is what a deployment sees; a
method is right when its ratio and its ms match those. Cost: about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from prunehead.architectures import build_model
from prunehead.export.latency import ort_session, time_in_turns
from prunehead.export.onnx import export_onnx
from prunehead.export.turns import take_turns
from prunehead.pruning.plan import PruningPlan
from prunehead.surgery import prune_

WIDTHS = (94, 67, 108, 115, 125, 127, 128)  # conv channels kept per layer by the 0.25 plan
HEADS = {0: (0, 1, 2, 3), 1: (0, 1, 2, 3, 4), 2: (0, 1, 2, 3)}  # 13 of the 36 heads of layers 0-2


def graphs(folder: Path) -> dict[str, Path]:
    """The unpruned and the pruned graph, exported to `folder`."""
    torch.manual_seed(0)
    dense = build_model("wav2vec2-12x12", "ks", num_labels=10).eval()
    cfg = dense.config
    plan = PruningPlan(cfg.num_hidden_layers, cfg.num_attention_heads, HEADS,
                       pruned_ffn={l: tuple(range(695)) for l in range(3)}, intermediate_size=cfg.intermediate_size,
                       pruned_conv={l: tuple(range(w, 128)) for l, w in enumerate(WIDTHS) if w < 128},
                       conv_width=128, pruned_layers=tuple(range(3, cfg.num_hidden_layers)))
    files = {"unpruned": folder / "unpruned.onnx", "pruned": folder / "pruned.onnx"}
    export_onnx(dense, files["unpruned"])
    export_onnx(prune_(dense, plan), files["pruned"])
    return files


def per_session_turns(files: dict[str, Path], feeds: dict[str, np.ndarray], repeats: int, threads: int) -> dict:
    """The method before 2026-12-07: every session its own (spinning) pool, in this process."""
    sessions = {name: ort_session(path, threads) for name, path in files.items()}
    return take_turns(sessions, feeds, repeats, warmup=3)


def alone(files: dict[str, Path], feeds: dict[str, np.ndarray], repeats: int, threads: int) -> dict:
    """Each graph timed with no other session in existence (a fresh process per graph)."""
    return {name: time_in_turns({name: path}, feeds, repeats, threads=threads)[name] for name, path in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    methods = {"alone": alone, "turns, a pool per session (before)": per_session_turns,
               "turns, one shared pool (now)": lambda f, x, r, t: time_in_turns(f, x, r, threads=t)}
    with tempfile.TemporaryDirectory(prefix="prunehead-bench-timing-") as tmp:
        files = graphs(Path(tmp))
        print("| batch | method | unpruned ms | pruned ms | speedup |")
        print("|---|---|---|---|---|")
        for batch in args.batches:
            rng = np.random.default_rng(batch)
            feeds = {"input_values": rng.standard_normal((batch, 16000), dtype=np.float32),
                     "attention_mask": np.ones((batch, 16000), dtype=np.int64)}
            for method, timer in methods.items():
                ms = {k: 1e3 * statistics.median(v) for k, v in timer(files, feeds, args.repeats, args.threads).items()}
                print(f"| {batch} | {method} | {ms['unpruned']:.1f} | {ms['pruned']:.1f} | "
                      f"{ms['unpruned'] / ms['pruned']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
