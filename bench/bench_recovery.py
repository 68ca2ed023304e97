"""Recovery side by side: one epoch on the labels vs one epoch of distillation from the unpruned model
(`--recover-distill`), at the same cuts, test accuracy and MACs.

    python bench/bench_recovery.py --model runs/results/w2v2-12x12-ks/out/model --data fsdd-ks \\
        --scores runs/results/w2v2-12x12-ks/out/scores/gradient.json \\
        --ffn-scores runs/results/w2v2-12x12-ks/out/scores/ffn.json --conv-scorer magnitude \\
        --cuts "0.4,0.75,0,0;0.3,0.5,0.25,0;0.4,0.75,0.25,0.25" --out runs/bench/recovery-w2v2.json

A cut is "heads,ffn,conv,layers" ratios (heads global, neurons and channels per layer, layers ranked by
taylor on 32 clips of the train split). Every run: `prunehead.prune(..., recover=Recovery(1, lr))` with
and without `Distill()`, the same seed, the test split evaluated before and after.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import prunehead
from prunehead.pruning.targets import Cut
from prunehead.specs import Data, Distill, Ranking, Recovery
from prunehead.units.base import Amount


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--scores", required=True, help="head score file")
    p.add_argument("--ffn-scores", required=True)
    p.add_argument("--conv-scorer", default="magnitude")
    p.add_argument("--cuts", required=True, help="heads,ffn,conv,layers ratios; cuts separated by ';'")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    started = time.monotonic()
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []  # resumable
    done = {(r["cut"], r["recovery"]) for r in rows}
    data = Data(args.data, batch_size=args.batch_size)
    for cut in args.cuts.split(";"):
        heads, ffn, conv, layers = (float(v) for v in cut.split(","))
        amounts = {"heads": Amount(ratio=heads)} if heads else {}
        rankings = {"heads": Ranking(scores=args.scores)} if heads else {}
        for kind, ratio, ranking in (("ffn", ffn, Ranking(scores=args.ffn_scores)),
                                     ("conv", conv, Ranking(args.conv_scorer, samples=32)),
                                     ("layers", layers, Ranking("taylor", samples=32))):
            if ratio:
                amounts[kind] = Amount(ratio=ratio, scope="per_layer", min_per_layer=1 if kind != "layers" else 0)
                rankings[kind] = ranking
        for name, distill in (("labels", None), ("distill", Distill())):
            if (cut, name) in done:
                continue
            t0 = time.monotonic()
            result = prunehead.prune(args.model, Cut(amounts), ranking=rankings, data=data,
                                     recover=Recovery(1, args.lr, distill=distill))
            r = result.report
            rows.append({"cut": cut, "recovery": name, "mac_fraction": r["macs_ratio"],
                         "before": r["metrics_before"]["accuracy"], "cut_only": r["metrics_after"]["accuracy"],
                         "recovered": r["metrics_after_recovery"]["accuracy"],
                         "recovery_seconds": r["recovery"]["wall_seconds"], "wall_s": round(time.monotonic() - t0)})
            print(json.dumps(rows[-1]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows, "device": platform.processor() or platform.machine(),
                                            "threads": torch.get_num_threads()}, indent=1) + "\n")
    print(f"wall {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
