"""Every generated block of docs/results.md: its marker id, its layout, and the step JSON it renders from.

A block reads `figures[part]` of `<root>/<model>/<step>.json`; a block of several models joins their rows
(each row names its `model`) in the order listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .layouts import Cost, Curve, Headline, HeadlinePaper, Iterative, Transposed
from .layouts_models import Hib200, Stability, Trained
from .layouts_plans import Budget, Frontier, Goal
from .tables import Table

WKS, WSID, W2V2, ASR = "whisper-tiny-fsdd-ks", "whisper-tiny-fsdd-sid", "w2v2-12x12-ks", "w2v2-12x12-asr"
MODELS = (WKS, WSID, W2V2, ASR)
ALL = "all"  # the id prefix of a block with one row (or group of rows) per model


class Layout(Protocol):
    def render(self, table: Table) -> str: ...

    def parse(self, text: str) -> Table: ...


@dataclass(frozen=True)
class Block:
    """A table of docs/results.md between `<!-- results:ID -->` and `<!-- /results -->`."""

    id: str
    layout: Any  # a Layout
    step: str
    part: str
    models: tuple[str, ...]

    @property
    def joined(self) -> bool:
        """True for a table of several models (rows carry `model`)."""
        return self.id.startswith(ALL + "/")


def _one(model: str, name: str, layout: Any, step: str, part: str | None = None) -> Block:
    return Block(f"{model}/{name}", layout, step, part or name, (model,))


def _all(name: str, layout: Any, step: str, models: tuple[str, ...], part: str | None = None) -> Block:
    return Block(f"{ALL}/{name}", layout, step, part or name, models)


ASR_CURVE = Curve(scorers=("gradient", "attention"), percent=True, suffix=" WER",
                  random_header="random WER (5 seeds)", bold_best=True)

BLOCKS: tuple[Block, ...] = (
    _one(WKS, "global", Curve(bold_x=0.4), "curves"),
    _one(WKS, "per-layer", Curve(per_layer=True, half=True), "curves"),
    _one(WKS, "headline", Headline(), "curves"),
    _one(WKS, "cost", Cost(), "scores"),
    _one(WSID, "cost", Cost(passes=False), "scores"),
    _one(WSID, "global", Curve(), "curves"),
    _one(WSID, "per-layer", Curve(per_layer=True), "curves"),
    _one(W2V2, "global", Curve(bold_x=0.4), "curves"),
    _one(W2V2, "per-layer", Curve(per_layer=True, half=True), "curves"),
    _one(W2V2, "headline", HeadlinePaper(), "curves"),
    _one(W2V2, "cost", Cost(), "scores"),
    _one(W2V2, "hib64", Transposed(bold=(("hib64", "0.4"), ("hib64", "0.7"))), "hib64"),
    _one(W2V2, "iterative", Iterative(), "iterative"),
    _one(ASR, "global", ASR_CURVE, "curves"),
    _all("trained", Trained(), "train", (WKS, WSID, W2V2)),
    _one(WKS, "budget", Budget(), "budget"),
    _one(WSID, "budget", Budget(), "budget"),
    _one(W2V2, "budget", Budget(), "budget"),
    _all("budget-both", Budget(by_model=True), "both", (WKS, WSID), part="both"),
    _one(WKS, "frontier", Frontier(), "frontier"),
    _one(W2V2, "frontier", Frontier(), "frontier"),
    _all("goal", Goal(), "goal", (WKS, W2V2)),
    _all("stability", Stability(), "scores", (WKS, WSID, W2V2)),
    _all("hib200", Hib200(), "hib200", (WKS, WSID, W2V2)),
)
BY_ID = {b.id: b for b in BLOCKS}


def split(block: Block, table: Table) -> dict[str, Table]:
    """A block's table as the part each model's step JSON holds (scalars go to every model)."""
    if not block.joined:
        return {block.models[0]: table}
    scalars = {k: v for k, v in table.items() if k != "rows"}
    parts: dict[str, Table] = {}
    for row in table["rows"]:
        if row.get("model") not in block.models:
            raise ValueError(f"block {block.id}: a row names model {row.get('model')!r}, not one of "
                             f"{', '.join(block.models)}; fix the table or the block's model list")
        parts.setdefault(row["model"], {**scalars, "rows": []})["rows"].append(row)
    return parts


def join(block: Block, parts: dict[str, Table]) -> Table:
    """The block's table from its models' parts (in the block's model order; absent models are left out)."""
    if not block.joined:
        return parts[block.models[0]]
    present = [parts[m] for m in block.models if m in parts]
    scalars = {k: v for k, v in present[0].items() if k != "rows"} if present else {}
    rows = [{**row, "model": m} for m in block.models if m in parts for row in parts[m]["rows"]]
    return {**scalars, "rows": rows}
