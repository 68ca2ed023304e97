"""Training from scratch with the defaults, as a user types it: accuracy, wall time, and what repeats.

    python bench/bench_training.py                      # the README's lines, 3 seeds x 2 architectures
    python bench/bench_training.py --seeds 0 --archs wav2vec2-small

Steps (each a `prunehead` command in a fresh process, in a temporary folder):
  1. `prunehead data synth ks --out kws/` (the README's line: 12 keywords x 60 clips);
  2. per architecture and seed: `prunehead finetune --model arch:A --data kws/ --out m/ --seed S` with every
     other setting at its default, then a fresh `prunehead eval` of m/ (it must equal train.json's final);
  3. repeatability: the first run again with the same command (byte-identical weights expected), and with
     `--threads 2` (float rounding may differ: the largest weight difference and the accuracy are printed);
  4. data-parallel: the first run under `torchrun --nproc-per-node 2` (weights within float rounding of the
     single-process run; wall time side by side).
Prints one table; every number is measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

BIN = Path(sys.executable).parent


CPU: list[float] = []  # CPU seconds (user + system) of the last command and its children


def run(*argv: str, launcher: list[str] | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of a prunehead command (its CPU seconds in CPU[-1]: on a shared machine the
    wall time grows with the load, the CPU time of a 1-thread run does not); raises with its output when it
    fails."""
    command = [*(launcher or []), str(BIN / "prunehead"), *argv]
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PRUNEHEAD_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - start, done.stdout


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="wav2vec2-small,whisper-encoder-small")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-repeat", action="store_true", help="skip steps 3 and 4")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        seconds, _ = run("data", "synth", "ks", "--out", str(root / "kws"))
        print(f"data synth ks: {seconds:.0f} s")
        print("| model | seed | test accuracy | eval of the folder | wall s | CPU s |\n|---|---|---|---|---|---|")
        for arch in args.archs.split(","):
            for seed in args.seeds.split(","):
                out = root / f"{arch}-{seed}"
                seconds, _ = run("finetune", "--model", f"arch:{arch}", "--data", str(root / "kws"), "--out", str(out),
                                 "--seed", seed)
                cpu = CPU[-1]
                final = json.loads((out / "train.json").read_text())["final"]
                _, printed = run("eval", "--model", str(out), "--data", str(root / "kws"))
                again = float(printed.split("accuracy: ")[1].split()[0])
                print(f"| arch:{arch} | {seed} | {final['accuracy']:.3f} | {again:.4f} | {seconds:.0f} | {cpu:.0f} |",
                      flush=True)
        if args.no_repeat:
            return
        arch, seed = args.archs.split(",")[0], args.seeds.split(",")[0]
        first = root / f"{arch}-{seed}"
        common = ["finetune", "--model", f"arch:{arch}", "--data", str(root / "kws"), "--seed", seed]
        _, _ = run(*common, "--out", str(root / "again"))
        seconds2, _ = run(*common, "--out", str(root / "threads2"), "--threads", "2")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port()]
        seconds_ddp, _ = run(*common, "--out", str(root / "ddp"), launcher=torchrun)
        one = json.loads((first / "train.json").read_text())
        for name in ("again", "threads2", "ddp"):
            record = json.loads((root / name / "train.json").read_text())
            print(f"{name}: max |weight - first run| = {max_diff(first, root / name):.2e}, accuracy "
                  f"{record['final']['accuracy']:.4f} (first run {one['final']['accuracy']:.4f}), "
                  f"{record['wall_seconds']:.0f} s training (first run {one['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
