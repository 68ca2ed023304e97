"""The whole path at full base size (12 x 12 heads, hidden 768, 95 M parameters) on this CPU, one table.

    python bench/bench_base.py                          # arch:wav2vec2-base, random init, 2 threads
    python bench/bench_base.py --arch hubert-base --samples 4 --hib-samples 2 --hib-steps 3

Steps, all through the library's own code paths (prunehead.scorers, prunehead.surgery, prunehead.export):
  1. gradient and attention scores on --samples FSDD digits (8 kHz, resampled to 16 kHz, padded to 1 s);
  2. HIB on --hib-samples x --hib-steps: each configuration (rows per optimization) runs in a fresh
     process, so its peak RSS (resource.getrusage) minus the RSS before scoring is the memory HIB added;
     time and memory are reported per (sample, layer) row;
  3. 40 % of the heads removed globally by the gradient scores (prunehead.surgery.prune_);
  4. both models exported to ONNX and the pruned graph checked against PyTorch;
  5. ONNX Runtime latency unpruned vs pruned, in turns on the same inputs, batch 1 and 8, 1 s and 10 s;
  6. MACs (prunehead.cost.count_macs) next to torch.utils.flop_counter.FlopCounterMode's count;
  7. the cost of a 200 samples x 200 steps HIB run on one GPU, extrapolated from FlopCounterMode's count
     of this run (0 and 1 steps give base + steps x per-step) at an explicit, stated GPU rate.
Random init: scores carry no meaning, costs and latencies depend only on the shapes.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly
from torch.utils.flop_counter import FlopCounterMode

from prunehead import prune_, select
from prunehead.architectures import build_model
from prunehead.cost import count_macs, count_params
from prunehead.export.latency import time_in_turns
from prunehead.export.onnx import SAMPLE_RATE, check_onnx, export_onnx, onnx_param_count
from prunehead.heads import head_adapter
from prunehead.scorers import get_scorer
from prunehead.scorers.hib import HIBScorer, value_statistics

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
# Assumed GPU rates (dense, no sparsity), stated so the extrapolation can be redone with other numbers.
GPU_RATES = {"H100 TF32 tensor cores, ~400 TFLOP/s dense (spec sheet 495)": 400e12,
             "H100 plain FP32 (no TF32), ~60 TFLOP/s (spec sheet 67)": 60e12}
GPU_EFFICIENCY = 0.3  # assumed share of that rate reached by HIB's many mid-size matmuls (stated, not measured)


def cross_entropy(outputs, batch):
    return F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="none")


def fsdd_batch(n: int, seconds: float = 1.0, labels: int = 12) -> dict[str, torch.Tensor]:
    """n FSDD clips (or synthetic noise if FSDD is absent), 16 kHz, normalized, zero-padded to `seconds`."""
    length = int(seconds * SAMPLE_RATE)
    files = sorted(FSDD.glob("*.wav"))[:: 97][:n] if FSDD.exists() else []
    rows = []
    for i in range(n):
        if i < len(files):
            audio, rate = sf.read(files[i], dtype="float32")
            audio = resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)[:length]
        else:
            audio = np.random.default_rng(i).standard_normal(length).astype(np.float32)
        audio = (audio - audio.mean()) / (audio.std() + 1e-7)  # as Wav2Vec2FeatureExtractor(do_normalize=True)
        rows.append(np.pad(audio, (0, length - len(audio))))
    return {"input_values": torch.from_numpy(np.stack(rows)), "labels": torch.arange(n) % labels}


def make_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, num_labels=12).eval()


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hib_child(arch: str, samples: int, steps: int, max_rows: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    model = make_model(arch)
    batch = fsdd_batch(samples)
    stats = value_statistics(model, [batch])
    before = rss_mb()
    start = time.perf_counter()
    HIBScorer(steps=steps, stats=stats, max_rows=max_rows).per_sample(model, [batch], cross_entropy)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB -> MB on Linux
    queue.put({"seconds": seconds, "peak_mb": peak, "before_mb": before})


def hib_in_child(arch: str, samples: int, steps: int, max_rows: int, threads: int) -> dict:
    """One HIB run in a fresh process: wall seconds, peak RSS and RSS before scoring (MB)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_hib_child, args=(arch, samples, steps, max_rows, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def hib_flops(model, batch) -> tuple[float, float]:
    """(FLOPs of HIB's clean work per sample, FLOPs per sample per step), from 0- and 1-step runs."""
    stats = value_statistics(model, [batch])
    counts = []
    for steps in (0, 1):
        with FlopCounterMode(display=False) as counter:
            HIBScorer(steps=steps, stats=stats).per_sample(model, [batch], cross_entropy)
        counts.append(counter.get_total_flops())
    n = batch["input_values"].shape[0]
    return counts[0] / n, (counts[1] - counts[0]) / n


def flop_macs(model, inputs) -> int:
    """FlopCounterMode's count of one forward, halved to MACs. Eager attention: the counter has no formula
    for CPU SDPA kernels, and would leave out the attention core (Q K^T and P V)."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**inputs)
    finally:
        model.set_attn_implementation(implementation)
    return counter.get_total_flops() // 2


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def randn_rate(n: int = 20_000_000) -> float:
    """Standard normals per second drawn by one CPU torch.Generator (HIB's draws are made on the host)."""
    gen = torch.Generator().manual_seed(0)
    seconds, _ = timed(lambda: torch.randn(n, generator=gen))
    return n / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="wav2vec2-base", help="a prunehead.architectures name")
    parser.add_argument("--samples", type=int, default=4, help="clips for the gradient and attention scores")
    parser.add_argument("--hib-samples", type=int, default=2)
    parser.add_argument("--hib-steps", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed ONNX Runtime runs per model for inputs under 10 s of audio (longer ones: 5, 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    print(f"device: CPU {model_name}, {os.cpu_count()} cores, {args.threads} threads; torch {torch.__version__}; "
          f"{platform.platform()}; load average {os.getloadavg()[0]:.1f}")

    model = make_model(args.arch)
    adapter = head_adapter(model)
    print(f"model: arch:{args.arch}, random init, {adapter.num_layers} x {adapter.num_heads} heads, "
          f"{count_params(model) / 1e6:.1f} M parameters, KS head (12 labels)\n")
    rows: list[tuple[str, str, str]] = []  # (step, measurement, time)

    batch = fsdd_batch(args.samples)
    scores = {}
    for name in ("gradient", "attention"):
        seconds, scores[name] = timed(lambda: get_scorer(name).score(model, [batch], cross_entropy))
        rows.append((f"{name} scores", f"{args.samples} FSDD clips of 1 s, one batch",
                     f"{seconds:.1f} s ({seconds / args.samples:.2f} s/sample)"))
        print(rows[-1])

    L = adapter.num_layers
    for samples in (1, args.hib_samples):  # all rows in one optimization; the difference: the cost of more rows
        r = hib_last = hib_in_child(args.arch, samples, args.hib_steps, 0, args.threads)
        n_rows = samples * L
        added = r["peak_mb"] - r["before_mb"]
        rows.append((f"HIB, {n_rows} rows in one optimization",
                     f"{samples} sample(s) x {L} layers, {args.hib_steps} steps; peak RSS +{added:.0f} MB "
                     f"({added / n_rows:.0f} MB per row held at once)",
                     f"{r['seconds']:.1f} s ({r['seconds'] / (n_rows * args.hib_steps):.2f} s per row-step)"))
        print(rows[-1])

    base_flops, step_flops = hib_flops(model, fsdd_batch(args.hib_samples))
    total = 200 * (base_flops + 200 * step_flops)
    rate = randn_rate()
    cfg = model.config
    frames = int(model._get_feat_extract_output_lengths(SAMPLE_RATE))  # 49 for 1 s
    draws = 200 * L * 200 * (cfg.num_attention_heads * frames * (cfg.hidden_size // cfg.num_attention_heads))

    pruned = prune_(copy.deepcopy(model), select(scores["gradient"], ratio=args.ratio, scope="global"))
    print(f"\npruned {args.ratio:.0%} globally by gradient scores; heads per layer "
          f"{adapter.heads_per_layer(pruned)}; params {count_params(model):,} -> {count_params(pruned):,}")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"unpruned": Path(tmp) / "unpruned.onnx", "pruned": Path(tmp) / "pruned.onnx"}
        seconds, sig = timed(lambda: export_onnx(model, files["unpruned"]))
        seconds2, _ = timed(lambda: export_onnx(pruned, files["pruned"]))
        check_s, check = timed(lambda: check_onnx(pruned, files["pruned"], sig))
        rows.append(("ONNX export", f"unpruned / pruned; pruned graph vs PyTorch max |diff| {check.max_abs_diff:.1e} "
                     f"on {list(check.shapes)}; graph weights {onnx_param_count(files['unpruned']):,} -> "
                     f"{onnx_param_count(files['pruned']):,}", f"{seconds:.0f} s / {seconds2:.0f} s, check {check_s:.0f} s"))
        print(rows[-1])
        print(f"\nONNX Runtime CPU, {args.threads} intra-op threads, models in turns, median of repeats")
        print(f"{'input':>6} {'batch':>5} {'unpruned ms':>12} {'pruned ms':>10} {'speed-up':>9} {'paired':>7} "
              f"{'MAC ratio':>10} {'FlopCounter':>12} {'count_macs vs FlopCounter':>26}")
        latency = []
        for seconds_in in (1.0, 10.0):
            n = int(seconds_in * SAMPLE_RATE)
            macs = {k: count_macs(m, sig.inputs(1, n))["total"] for k, m in (("unpruned", model), ("pruned", pruned))}
            fmacs = {k: flop_macs(m, sig.inputs(1, n)) for k, m in (("unpruned", model), ("pruned", pruned))}
            for batch_size in (1, 8):
                work = seconds_in * batch_size  # seconds of audio per run
                repeats, warmup = (args.repeats, 2) if work < 10 else (5, 1) if work < 40 else (3, 0)
                feeds = {k: v.numpy() for k, v in sig.inputs(batch_size, n, seed=batch_size).items()}
                times = time_in_turns({k: str(v) for k, v in files.items()}, feeds, repeats=repeats, warmup=warmup,
                                      threads=args.threads)
                ms = {k: 1e3 * statistics.median(t) for k, t in times.items()}
                paired = statistics.median(u / p for u, p in zip(times["unpruned"], times["pruned"], strict=True))
                row = (seconds_in, batch_size, ms["unpruned"], ms["pruned"], ms["unpruned"] / ms["pruned"], paired,
                       macs["unpruned"] / macs["pruned"], fmacs["unpruned"] / fmacs["pruned"],
                       max(abs(macs[k] / fmacs[k] - 1) for k in macs))
                latency.append(row)
                print(f"{row[0]:>5g}s {row[1]:>5} {row[2]:>12.1f} {row[3]:>10.1f} {row[4]:>8.3f}x {row[5]:>6.3f}x "
                      f"{row[6]:>9.3f}x {row[7]:>11.3f}x {row[8]:>25.2%}")
            print(f"       MACs per clip of {seconds_in:g} s: {macs['unpruned'] / 1e9:.2f} G -> {macs['pruned'] / 1e9:.2f} G "
                  f"(FlopCounterMode {fmacs['unpruned'] / 1e9:.2f} G -> {fmacs['pruned'] / 1e9:.2f} G)")

    print("\nHIB 200 samples x 200 steps (1 s clips, per_layer scope, cached layers), extrapolated from "
          f"FlopCounterMode: {base_flops / 1e9:.1f} GFLOP clean work + {step_flops / 1e9:.1f} GFLOP per step, per sample"
          f" -> {total / 1e15:.2f} PFLOP in all")
    for label, gpu in GPU_RATES.items():
        print(f"  {label}: {total / gpu:.0f} s at 100 % of that rate, {total / gpu / GPU_EFFICIENCY / 60:.1f} min "
              f"at an assumed {GPU_EFFICIENCY:.0%}")
    print(f"  host draws (A_r init and noise from CPU generators): {draws / 1e9:.1f} G normals at "
          f"{rate / 1e6:.0f} M/s on one core of this CPU = {draws / rate / 60:.1f} min, unless overlapped")
    cpu_rate = args.hib_samples * (base_flops + args.hib_steps * step_flops) / hib_last["seconds"]
    print(f"  on this CPU ({cpu_rate / 1e9:.0f} GFLOP/s in the {args.hib_samples}-sample HIB run above): "
          f"{total / cpu_rate / 3600:.0f} h")
    print(f"\nwall time {time.perf_counter() - wall:.0f} s; load average after {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
