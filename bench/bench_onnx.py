"""ONNX Runtime latency of an unpruned vs a 40 %-globally-pruned w2v2-12x12-ks, next to the MAC ratio.

    python bench/bench_onnx.py                      # random-init "wav2vec2-12x12", random head scores
    python bench/bench_onnx.py --model runs/w2v2-12x12-ks [--scores scores.json]

Without --model the bench builds the architecture with random weights and prunes by random scores:
latency and MACs depend on the shapes (which heads are gone per layer), not on the weights. With a
trained model, pass its score file to prune the heads a scorer chose (default: random scores too).
Both graphs are timed in turns on the same inputs (1 s and 5 s of audio, batch 1 and 8), ONNX Runtime
CPU with a fixed number of intra-op threads, median of --repeats runs.

The prediction: time scales with MACs, so speed-up = MACs(unpruned) / MACs(pruned). The bench reports
  * realised = (speed-up - 1) / (MAC ratio - 1): the share of the predicted *gain* that was measured
    (the target: >= 90 %), and
  * speed-up / MAC ratio: the looser reading of "90 % of the predicted speed-up".
"paired" is the median of the per-turn ratios, a second estimate that is less sensitive to a load that
changes during the run (the bench is meant for shared machines too).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from prunehead import load, load_scores, prune_, select
from prunehead.architectures import build_model
from prunehead.cost import count_macs, count_params
from prunehead.export.latency import time_in_turns
from prunehead.export.onnx import SAMPLE_RATE, Signature, check_onnx, export_onnx, onnx_param_count
from prunehead.export.pipeline import randomize_weights_, unpruned_reference
from prunehead.heads import head_adapter, pruned_heads_of

TARGET = 0.9  # share of the MAC-predicted gain the measurement must realise


def pair(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(unpruned, pruned, description)."""
    if args.model:
        model = load(args.model)
        what = args.model
    else:
        model = randomize_weights_(build_model("wav2vec2-12x12", task="ks", num_labels=12), seed=args.seed)
        what = "random-init wav2vec2-12x12 (KS head, 12 labels)"
    if pruned_heads_of(model):  # already pruned: time it against its dense architecture
        return unpruned_reference(model), model, what + " (pruned as saved)"
    adapter = head_adapter(model)
    if args.scores:
        scores = load_scores(args.scores, expect=(adapter.num_layers, adapter.num_heads))
        how = f"scores {args.scores}"
    else:
        gen = torch.Generator().manual_seed(args.seed)
        scores = torch.rand(adapter.num_layers, adapter.num_heads, generator=gen)
        how = f"random scores (seed {args.seed})"
    pruned = prune_(copy.deepcopy(model), select(scores, ratio=args.ratio, scope="global"))
    return model, pruned, f"{what}; {args.ratio:.0%} of heads removed globally by {how}"


def measure(files: dict[str, Path], nets: dict[str, torch.nn.Module], sig: Signature, seconds: float, batch: int,
            args: argparse.Namespace) -> dict:
    """One row: median latencies, their ratio, the median of paired ratios, and the MAC ratio."""
    n = round(seconds * SAMPLE_RATE)
    macs = {k: count_macs(m, sig.inputs(1, n))["total"] for k, m in nets.items()}
    feeds = {k: v.numpy() for k, v in sig.inputs(batch, n, seed=batch).items()}
    times = time_in_turns({k: str(v) for k, v in files.items()}, feeds, args.repeats, threads=args.threads)
    ms = {k: 1e3 * statistics.median(t) for k, t in times.items()}
    speedup = ms["unpruned"] / ms["pruned"]
    paired = statistics.median(u / p for u, p in zip(times["unpruned"], times["pruned"], strict=True))
    mac_ratio = macs["unpruned"] / macs["pruned"]
    return {"seconds": seconds, "batch": batch, "unpruned_ms": ms["unpruned"], "pruned_ms": ms["pruned"],
            "speedup": speedup, "paired_speedup": paired, "mac_ratio": mac_ratio, "macs_batch1": macs,
            "realised": (speedup - 1) / (mac_ratio - 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: random-init wav2vec2-12x12)")
    parser.add_argument("--scores", help="score file to prune by (default: random scores)")
    parser.add_argument("--ratio", type=float, default=0.4, help="fraction of heads removed globally")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0], help="input lengths")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per model and input (median)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    unpruned, pruned, what = pair(args)
    print(f"model: {what}")
    print(f"heads per layer: {head_adapter(pruned).heads_per_layer(pruned)}")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"unpruned": Path(tmp) / "unpruned.onnx", "pruned": Path(tmp) / "pruned.onnx"}
        start = time.perf_counter()
        sig = export_onnx(unpruned, files["unpruned"])
        export_onnx(pruned, files["pruned"])
        diff = check_onnx(pruned, files["pruned"], sig).max_abs_diff
        print(f"exported both in {time.perf_counter() - start:.0f} s; pruned graph vs PyTorch: max |diff| {diff:.1e}")
        print(f"params {count_params(unpruned):,} -> {count_params(pruned):,}; graph weights "
              f"{onnx_param_count(files['unpruned']):,} -> {onnx_param_count(files['pruned']):,}; file "
              f"{files['unpruned'].stat().st_size:,} -> {files['pruned'].stat().st_size:,} B")
        print(f"onnxruntime {ort.__version__} CPU, {args.threads} intra-op threads, median of {args.repeats} runs, "
              f"models in turns; load average before: {os.getloadavg()[0]:.1f}\n")
        print(f"{'input':>6} {'batch':>5} {'unpruned ms':>12} {'pruned ms':>10} {'speed-up':>9} {'paired':>7} "
              f"{'MAC ratio':>10} {'realised':>9} {'/MAC':>6}")
        rows = []
        for seconds in args.seconds:
            for batch in args.batches:
                row = measure(files, {"unpruned": unpruned, "pruned": pruned}, sig, seconds, batch, args)
                rows.append(row)
                print(f"{seconds:>5g}s {batch:>5} {row['unpruned_ms']:>12.2f} {row['pruned_ms']:>10.2f} "
                      f"{row['speedup']:>8.3f}x {row['paired_speedup']:>6.3f}x {row['mac_ratio']:>9.3f}x "
                      f"{row['realised']:>8.0%} {row['speedup'] / row['mac_ratio']:>6.0%}")
    met = sum(r["realised"] >= TARGET for r in rows)
    loose = sum(r["speedup"] >= TARGET * r["mac_ratio"] for r in rows)
    print(f"\nspeed-up = median unpruned / median pruned; paired = median of per-turn ratios; realised = "
          f"(speed-up - 1) / (MAC ratio - 1); /MAC = speed-up / MAC ratio\n"
          f"target realised >= {TARGET:.0%}: met in {met}/{len(rows)} settings (speed-up >= {TARGET:.0%} of the "
          f"MAC ratio: {loose}/{len(rows)}); load average after: {os.getloadavg()[0]:.1f}")
    print(f"device: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}")
    if args.json:
        args.json.write_text(json.dumps({"model": what, "threads": args.threads, "repeats": args.repeats,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
