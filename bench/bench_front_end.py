"""What the conv front end must lose for a given batch-8 speedup of wav2vec2-12x12 (shapes only, one table).

    python bench/bench_front_end.py                 # batch 1 and 8, 1 s of audio, 20 repeats, 2 threads

The 12 x 12 wav2vec2 of `recipes/w2v2-12x12-ks.toml` (random init: latency depends on the shapes), unpruned,
against its encoder cut to the shape of the `--method l0 --target-macs 0.25` plan of docs/results.md (layers
0-2 kept, 13 of their 36 heads and 2,085 of their neurons gone) with the front end's channels per conv layer
as listed: the l0 plan's own widths, then narrower first layers. The graphs are exported and timed in turns
by `time_in_turns` (`LatencyBench`); the columns are median ms and the speedup against the unpruned graph,
with the MACs of each. Cost: about a minute on 2 cores.
"""

from __future__ import annotations

import argparse

import torch

from prunehead.architectures import build_model
from prunehead.cost import count_macs, example_inputs
from prunehead.export.bench import LatencyBench
from prunehead.pruning.plan import PruningPlan
from prunehead.surgery import prune_

FULL = 128  # channels per conv layer of wav2vec2-12x12
FRONT_ENDS = {  # kept channels of conv layers 0-6
    "the l0 plan's (94, 67, 108, ...)": (94, 67, 108, 115, 125, 127, 128),
    "layer 0 at 64": (64, 67, 108, 115, 125, 127, 128),
    "layer 0 at 32": (32, 67, 108, 115, 125, 127, 128),
    "layers 0-1 at 48": (48, 48, 108, 115, 125, 127, 128),
    "every layer at 64": (64,) * 7,
}


def pruned(dense: torch.nn.Module, widths: tuple[int, ...]) -> torch.nn.Module:
    cfg = dense.config
    model = build_model("wav2vec2-12x12", "ks", num_labels=10).eval()
    model.load_state_dict(dense.state_dict())
    heads = {0: (0, 1, 2, 3), 1: (0, 1, 2, 3, 4), 2: (0, 1, 2, 3)}  # 13 of the 36 heads of layers 0-2
    plan = PruningPlan(cfg.num_hidden_layers, cfg.num_attention_heads, heads,
                       pruned_ffn={l: tuple(range(695)) for l in range(3)}, intermediate_size=cfg.intermediate_size,
                       pruned_conv={l: tuple(range(w, FULL)) for l, w in enumerate(widths) if w < FULL},
                       conv_width=FULL, pruned_layers=tuple(range(3, cfg.num_hidden_layers)))
    return prune_(model, plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = build_model("wav2vec2-12x12", "ks", num_labels=10).eval()
    x = example_inputs(dense, 1.0, 1)
    dense_macs = count_macs(dense, x)["total"]
    macs = {}
    with LatencyBench(dense) as bench:
        for name, widths in FRONT_ENDS.items():
            model = pruned(dense, widths)
            macs[name] = count_macs(model, x)["total"] / dense_macs
            bench.add(name, model)
        ms = bench.time([1, 8], 16000, repeats=args.repeats, threads=args.threads)
        speedup = bench.speedups(ms)
    print(f"unpruned: {ms['reference']['1']:.1f} ms at batch 1, {ms['reference']['8']:.1f} ms at batch 8\n")
    print("| front end kept | MACs | batch 1 ms | speedup | batch 8 ms | speedup |")
    print("|---|---|---|---|---|---|")
    for name in FRONT_ENDS:
        print(f"| {name} | {macs[name]:.3f} | {ms[name]['1']:.1f} | {speedup[name]['1']:.2f}x | {ms[name]['8']:.1f} | "
              f"{speedup[name]['8']:.2f}x |")


if __name__ == "__main__":
    main()
