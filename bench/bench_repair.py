"""Training-free repair, side by side: the plain cut vs `--repair bias` vs `--repair lsq` at the same plans,
and the MAC floor of the model with and without its conv front end.

    python bench/bench_repair.py --model runs/results/w2v2-12x12-ks/out/model --data fsdd-ks \\
        --scores runs/results/w2v2-12x12-ks/out/scores/gradient.json \\
        --ffn-scores runs/results/w2v2-12x12-ks/out/scores/ffn.json --out runs/bench/repair-w2v2.json

Every plan is `prune --ratio R --global --ffn-ratio F` of the given rankings. The repair calibrates once on
`--samples` seeded clips of the train split (the statistics do not depend on the plan); every model is
evaluated on the test split. Prints a table and "the largest cut within --budget of the unpruned accuracy"
per method (largest = fewest MACs).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from prunehead import load_scores, mac_floor, open_workspace
from prunehead.cost import count_macs, example_inputs
from prunehead.pruning.plan import select, select_ffn
from prunehead.pruning.repair import calibrate, repair_
from prunehead.units.kinds import remove_all_

HEADS = (0.2, 0.4, 0.6)
FFN = (0.0, 0.25, 0.5, 0.75)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--scores", required=True, help="head score file")
    p.add_argument("--ffn-scores", required=True)
    p.add_argument("--samples", type=int, default=64, help="calibration clips of the train split")
    p.add_argument("--budget", type=float, default=0.01, help="accuracy drop that counts as 'within'")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args()
    torch.manual_seed(0)
    started = time.monotonic()
    test = open_workspace(args.model, args.data, "test", batch_size=32)
    model = test.model
    inputs = example_inputs(model, 1.0)
    dense_macs = count_macs(model, inputs)["total"]
    floors = {name: mac_floor(model, units)["fraction"] for name, units in
              (("heads+ffn", ("heads", "ffn")), ("heads+ffn+conv", ("heads", "ffn", "conv")))}
    print("MAC floor (fraction of the dense MACs on 1 s):", {k: round(v, 4) for k, v in floors.items()})
    unpruned = test.evaluate()["accuracy"]
    calibration = open_workspace(model, args.data, "train", batch_size=8).draw(args.samples, 0, 8).batches
    sites = calibrate(model, calibration)
    heads = load_scores(args.scores)
    ffn = load_scores(args.ffn_scores, units="ffn")
    rows = []
    for h in HEADS:
        for f in FFN:
            plan = select(heads, ratio=h, scope="global")
            plan = select_ffn(ffn, plan, ratio=f) if f else plan
            cut = remove_all_(copy.deepcopy(model), plan)
            row = {"head_ratio": h, "ffn_ratio": f, "mac_fraction": count_macs(cut, inputs)["total"] / dense_macs}
            row["none"] = test.evaluate(cut)["accuracy"]
            for method in ("bias", "lsq"):
                repaired = copy.deepcopy(cut)
                repair_(repaired, model, sites, method)
                row[method] = test.evaluate(repaired)["accuracy"]
            rows.append(row)
            print(f"heads {h:.1f} ffn {f:.2f}  MACs {row['mac_fraction']:.3f}  none {row['none']:.4f}  "
                  f"bias {row['bias']:.4f}  lsq {row['lsq']:.4f}", flush=True)
    best = {}
    for method in ("none", "bias", "lsq"):
        within = [r for r in rows if unpruned - r[method] <= args.budget + 1e-12]
        best[method] = min(within, key=lambda r: r["mac_fraction"]) if within else None
        chosen = best[method]
        print(f"largest cut within {args.budget:g} ({method}): " + (
            f"heads {chosen['head_ratio']}, ffn {chosen['ffn_ratio']}, MACs {chosen['mac_fraction']:.3f}, accuracy "
            f"{chosen[method]:.4f}" if chosen else "none"))
    wall = time.monotonic() - started
    print(f"unpruned accuracy {unpruned:.4f}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; wall time {wall:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "data": args.data, "unpruned": unpruned, "floors": floors,
                                        "samples": args.samples, "rows": rows, "best": best, "wall_s": wall},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
