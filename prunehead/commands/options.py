"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[str, typer.Option("--model", "-m", help="Model directory (pruned or not) or hub id.")]
Scores = Annotated[Path, typer.Option("--scores", "-s", help="Score file written by `prunehead score`.")]
Ratio = Annotated[float | None, typer.Option(help="Fraction of heads to remove (global: of all L*H heads; "
                                                   "per-layer: of each layer's H).")]
Heads = Annotated[int | None, typer.Option(help="Remove exactly K heads in every layer (implies --per-layer).")]
Global = Annotated[bool | None, typer.Option("--global/--per-layer",
                                             help="Rank heads over the whole model (default with --ratio) "
                                                  "or within each layer (default with --heads).")]
MinHeads = Annotated[int, typer.Option(help="Never leave a layer with fewer heads than this.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output path.")]
Overwrite = Annotated[bool, typer.Option(help="Replace the output if it exists.")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda when available).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only print the plan and write plan.json.")]
ScorerOptions = Annotated[list[str] | None, typer.Option(
    "--option", help="Any other scorer option as KEY=VALUE (repeatable), e.g. scope=all_layers, variant=entropy.")]
