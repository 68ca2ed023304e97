"""A manifest that gives an FSDD model a held-out selection split, for `prune --max-drop` / `--scorer auto`.

    python bench/fsdd_selection.py ks runs/fsdd-ks-sel.csv     # or: sid runs/fsdd-sid-sel.csv
    python bench/fsdd_selection.py ks out.csv RECORDINGS_DIR   # another copy of FSDD (or a subset of it)

The FSDD specs have train (takes 5-49) and test (takes 0-4) only, so a budget would be selected on the
training clips. This manifest keeps train as it is and splits the 300 test clips by take: `validation` =
takes 0-1 (120 clips), `test` = takes 2-4 (180 clips). Neither was trained on; selection reads validation,
the report's test metric reads test. Labels are those of the `fsdd-ks` / `fsdd-sid` specs.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from prunehead.data.sources import resolve


def main(target: str, out: Path, recordings: str | None = None) -> None:
    """Write the manifest of `fsdd-{target}` (from `recordings`, default ../shared's FSDD) to `out`."""
    spec = f"fsdd-{target}" + (f":{recordings}" if recordings else "")
    rows = []
    for split in ("train", "test"):
        for item in resolve(spec, split, None).items:
            take = int(Path(item.name).stem.rsplit("_", 1)[1])
            name = split if split == "train" else "validation" if take < 2 else "test"
            rows.append({"path": os.path.abspath(item.name), "label": item.target, "split": name})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")}
    print(f"wrote {out}: {counts}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("ks", "sid"):
        sys.exit("usage: python bench/fsdd_selection.py ks|sid OUT.csv [RECORDINGS_DIR]")
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else None)
