"""Options shared by several commands, declared once. Light imports only: `--help` must not load torch.

Values are validated while the command line is parsed (ranges, finiteness), before anything heavy loads.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, not {value}")
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number above 0, not {value}")
    return value


def _fraction(value: float | None) -> float | None:
    """A fraction: finite and within [0, 1] (NaN is "not a finite number", not "above 1")."""
    _finite(value)
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"must be within [0, 1], not {value}")
    return value


def _clip_seconds(value: float | None) -> float | None:
    """A clip length: finite, at least 10 ms and at most `prunehead.data.audio.MAX_CLIP_SECONDS`."""
    from ..data.audio import MAX_CLIP_SECONDS

    _finite(value)
    if value is not None and not 0.01 <= value <= MAX_CLIP_SECONDS:
        raise typer.BadParameter(f"must be at least 0.01 and at most {MAX_CLIP_SECONDS:.0f} seconds (every clip is "
                                 f"padded to it), not {value}")
    return value


def _expand(value: Path | None) -> Path | None:
    """`~` in a path means the home folder, as in a shell (`--out=~/x` is not expanded by the shell)."""
    return Path(value).expanduser() if value is not None else None


class TaskName(str, Enum):
    """The tasks (prunehead.tasks.TASKS)."""

    ks = "ks"
    sid = "sid"
    ic = "ic"
    asr = "asr"


class OnErrorChoice(str, Enum):
    """What to do with a file that cannot be decoded."""

    stop = "stop"
    skip = "skip"


class DtypeName(str, Enum):
    """Compute precisions (prunehead.precision)."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


Dtype = Annotated[DtypeName, typer.Option(help="Evaluate under autocast in this precision (GPU: bfloat16 is "
                                                "fast; scores and metrics move slightly).")]
Workers = Annotated[int, typer.Option(min=0, help="Extract features in this many DataLoader worker processes "
                                                  "(0: in the main process; on a GPU, 2-4 keep it busy).")]
Model = Annotated[str, typer.Option("--model", "-m", help="Model folder (pruned or not) or hub id.")]
Data = Annotated[str, typer.Option("--data", "-d", help="Folder, .csv/.jsonl manifest, fsdd-ks[:DIR], fsdd-sid[:DIR], "
                                                        "speech-commands[:DIR] or hub:NAME[:CONFIG]; join with '+'.")]
FfnScores = Annotated[Path | None, typer.Option(show_default=False, help="FFN neuron score file (`prunehead score "
                                                                        "--units ffn`).")]
FfnScorer = Annotated[str, typer.Option(help="Score the FFN neurons here when no --ffn-scores: taylor (gradient x "
                                             "activation on --data's train split; prune: --score-split) or "
                                             "magnitude (data-free).")]
ConvScores = Annotated[Path | None, typer.Option(show_default=False, help="Conv channel score file (`prunehead "
                                                                         "score --units conv`).")]
ConvScorer = Annotated[str, typer.Option(help="Score the conv channels here when no --conv-scores: taylor (gradient "
                                              "x gate on --data's train split; prune: --score-split) or magnitude "
                                              "(data-free).")]
LayerScores = Annotated[Path | None, typer.Option(show_default=False, help="Layer score file (`prunehead score "
                                                                          "--units layers`).")]
LayerScorer = Annotated[str, typer.Option(help="Score the encoder layers here when no --layer-scores: taylor (gradient "
                                               "x skip gate) or occlusion (loss with each layer skipped), on --data's "
                                               "--score-split.")]
OptionalData = Annotated[str | None, typer.Option("--data", "-d", help="Data spec (as for `prunehead eval`).")]
Split = Annotated[str, typer.Option(help="Data split to use.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Utterances per batch.")]
Task = Annotated[TaskName | None, typer.Option(help="Task. [default: inferred from the model]", show_default=False)]
OnError = Annotated[OnErrorChoice, typer.Option(help="stop: fail on an undecodable file; skip: drop it with a warning.")]
ClipSeconds = Annotated[float | None, typer.Option(callback=_clip_seconds, show_default=False,
                                                   help="Centre-crop / zero-pad every clip to this length. "
                                                        "[default: the length the model was trained with]")]
Samples = Annotated[int, typer.Option(min=1, help="Samples drawn (seeded) from the split for scoring.")]
Seed = Annotated[int, typer.Option(min=0, help="Sample selection and scorer seed.")]
Ratio = Annotated[float | None, typer.Option(callback=_fraction, show_default=False,
                                             help="Fraction of heads to remove (global: of all L*H heads; "
                                                  "per layer: of each layer's H).")]
Heads = Annotated[int | None, typer.Option(min=0, show_default=False,
                                           help="Remove exactly K heads in every layer (implies --per-layer).")]
Global = Annotated[bool | None, typer.Option("--global/--per-layer", show_default=False,
                                             help="Rank heads over the whole model or within each layer. "
                                                  "[default: --global with --ratio, --per-layer with --heads]")]
MinHeads = Annotated[int, typer.Option(min=0, help="Never leave a layer with fewer heads than this.")]
Out = Annotated[Path, typer.Option("--out", "-o", callback=_expand, help="Output path.")]
Overwrite = Annotated[bool, typer.Option(help="Replace the output if it exists (only what this command writes).")]
Device = Annotated[str | None, typer.Option(show_default=False,
                                            help="cpu, cuda, cuda:1 ... [default: cuda when available]")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only decide: print the plan and write plan.json "
                                                       "(no model surgery).")]
ScorerOptions = Annotated[list[str] | None, typer.Option(
    "--option", show_default=False,
    help="A scorer option as KEY=VALUE (repeatable), e.g. scope=all_layers, variant=entropy.")]
Finite = _finite
Fraction = _fraction
Positive = _positive


def parse_options(options: list[str] | None) -> dict[str, object]:
    """["k=v", ...] -> {"k": v}: values parsed as JSON when they are JSON (numbers, true, ...)."""
    import json

    from ..errors import InputError

    parsed: dict[str, object] = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option {item!r}: write KEY=VALUE, e.g. --option scope=all_layers")
        try:
            parsed[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = value
    return parsed


def inputs_of(model: str | None = None, data: str | None = None, *files: Path | str | None) -> list[Path]:
    """The local files and folders a command reads (an output may not be, contain or lie in one)."""
    from ..data import spec_paths

    paths = [Path(f) for f in files if f is not None]
    if model is not None and Path(model).expanduser().exists():
        paths.append(Path(model).expanduser())
    return paths + (spec_paths(data) if data else [])


def resume_hint() -> str:
    """The command line that continues the interrupted run."""
    import shlex
    import sys

    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return f"continue with: prunehead {shlex.join(argv)} --resume"
