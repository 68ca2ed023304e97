"""HIB speed, side by side: the plain per-sample loop vs the batched path, same model, samples and seeds.

    python bench/bench_hib.py                       # 12 x 12 compact wav2vec2 (random init), CPU
    python bench/bench_hib.py --model DIR --samples 8 --steps 20 --device cuda

Plain = for every sample, for every layer: `steps` full forward+backward passes of that one sample.
Batched = all samples x all layers in one optimization, front end and the hidden states entering each
layer cached (each row runs only from its target layer). Both give the same C_h (printed: max |diff|).

It also counts each path's floating-point operations (torch.utils.flop_counter, exact for matmuls and
convolutions) and prints the achieved GFLOP/s: the speed-up = (FLOP ratio) x (efficiency ratio), which
shows how much of it is work removed and how much is bigger, faster matrix products.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from prunehead.architectures import build_model
from prunehead.scorers.hib import HIBScorer, value_statistics


def cross_entropy(outputs, batch):
    return F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="none")


def timed(scorer: HIBScorer, model, batches, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    _, results = scorer.per_sample(model, batches, cross_entropy)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, results


def counted_flops(make: callable, model, batches, steps: int) -> int:
    """FLOPs of a whole scoring run with `steps` steps: the 0- and 1-step runs give base + steps x per-step."""
    counts = []
    for n in (0, 1):
        with FlopCounterMode(display=False) as counter:
            make(n).per_sample(model, batches, cross_entropy)
        counts.append(counter.get_total_flops())
    return counts[0] + steps * (counts[1] - counts[0])


def matmul_rate(rows: int, hidden: int, inner: int, device: torch.device) -> float:
    """GFLOP/s of one fp32 (rows x hidden) @ (hidden x inner) product on `device`: the attainable rate."""
    a, b = torch.randn(rows, hidden, device=device), torch.randn(hidden, inner, device=device)
    for _ in range(3):
        a @ b
    repeats = max(3, int(2e10 / (2 * rows * hidden * inner)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * rows * hidden * inner * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wav2vec2-12x12", help="architecture name or saved model directory")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length (1 s = 49 frames)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-plain", action="store_true", help="time only the batched path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    if args.model in ("wav2vec2-12x12", "wav2vec2-base", "wav2vec2-tiny"):
        model = build_model(args.model, num_labels=12)
    else:
        from prunehead.surgery import load

        model = load(args.model)
    model = model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    n = int(args.seconds * 16_000)
    batch = {"input_values": torch.randn(args.samples, n, generator=g).to(device),
             "labels": torch.randint(0, model.config.num_labels, (args.samples,), generator=g).to(device)}
    stats = value_statistics(model, [batch])  # shared by both paths (sigma from the same samples)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads

    def make_batched(steps: int) -> HIBScorer:
        return HIBScorer(steps=steps, stats=stats)

    def make_plain(steps: int) -> HIBScorer:
        return HIBScorer(steps=steps, stats=stats, batched=False, cache=False)

    fast_s, fast_c = timed(make_batched(args.steps), model, [batch], device)
    fast_f = counted_flops(make_batched, model, [batch], args.steps)
    print(f"model {args.model} ({L} x {H} heads), {args.samples} samples of {args.seconds:g} s, {args.steps} steps, "
          f"device {device} ({platform.processor() or platform.machine()}, {args.threads} threads), "
          f"torch {torch.__version__}")
    print(f"{'path':<8} {'seconds':>9} {'samples/s':>10} {'GFLOP':>9} {'GFLOP/s':>8}")
    print(f"{'batched':<8} {fast_s:9.2f} {args.samples / fast_s:10.3f} {fast_f / 1e9:9.1f} {fast_f / 1e9 / fast_s:8.1f}")
    if args.skip_plain:
        return
    plain_s, plain_c = timed(make_plain(args.steps), model, [batch], device)
    plain_f = counted_flops(make_plain, model, [batch], args.steps)
    print(f"{'plain':<8} {plain_s:9.2f} {args.samples / plain_s:10.3f} {plain_f / 1e9:9.1f} {plain_f / 1e9 / plain_s:8.1f}")
    print(f"speed-up {plain_s / fast_s:.1f}x = {plain_f / fast_f:.2f}x fewer FLOPs x "
          f"{(fast_f / fast_s) / (plain_f / plain_s):.2f}x higher FLOP rate; "
          f"max |C_plain - C_batched| = {(plain_c - fast_c).abs().max().item():.2e} "
          f"(C range {plain_c.min().item():.3f} .. {plain_c.max().item():.3f})")
    cfg = model.config
    peak = matmul_rate(args.samples * L * 50, cfg.hidden_size, cfg.intermediate_size, device)
    print(f"matmul rate on this device ({args.samples * L * 50} x {cfg.hidden_size} x {cfg.intermediate_size}): "
          f"{peak:.1f} GFLOP/s; ceiling if the batched path ran at that rate: "
          f"{(plain_f / fast_f) * peak / (plain_f / 1e9 / plain_s):.1f}x")


if __name__ == "__main__":
    main()
