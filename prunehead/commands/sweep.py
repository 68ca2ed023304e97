"""`prunehead sweep`: pruning curves (metric vs pruned fraction) for several score files, or with
--ffn-ratios the speed / accuracy frontier of one (metric vs MACs and ONNX Runtime latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .formatting import model_label
from .options import (BatchSize, ClipSeconds, ConvScorer, ConvScores, Data, Device, Dtype, DtypeName, FfnScorer,
                      FfnScores, Global, LayerScorer, LayerScores, Model, Out, Overwrite, Positive, Split, Task,
                      Workers, inputs_of)

Opt = typer.Option
ScoreFiles = Annotated[list[Path], Opt("--scores", "-s", help="Score files (repeat, or list them after the "
                                                              "options); with --ffn-ratios exactly one.")]
FfnRatios = Annotated[str | None, Opt(show_default=False,
                                      help="Draw the speed / accuracy frontier instead: every --ratios head ratio "
                                           "x each of these FFN ratios (START:STOP:STEP or a comma list; neurons "
                                           "cut per layer, as `prune --ffn-ratio`). Writes frontier.json/.md/.png.")]
ConvRatios = Annotated[str | None, Opt(show_default=False,
                                       help="With --ffn-ratios: also each of these conv channel ratios (front-end "
                                            "channels cut per conv layer, as `prune --conv-ratio`).")]
LayerRatios = Annotated[str | None, Opt(show_default=False,
                                        help="With --ffn-ratios: also each of these ratios of whole encoder layers "
                                             "(ranked over the encoder, as `prune --layer-ratio`).")]
Latency = Annotated[bool, Opt("--latency", help="Also export every frontier point to ONNX and time it with ONNX "
                                                "Runtime in turns with the dense model (median ms, speedup).")]
BatchSizes = Annotated[str | None, Opt(show_default=False,
                                       help="Comma list of batch sizes timed with --latency. [default: 1,8]")]
Seconds = Annotated[float | None, Opt(callback=Positive, show_default=False,
                                      help="Seconds of audio per input for the frontier's MAC count and latency "
                                           "(Whisper: its fixed window; text models: 128 tokens). [default: 1.0]")]
Repeats = Annotated[int | None, Opt(min=1, show_default=False,
                                    help="Timed runs per model and batch size with --latency; the median is "
                                         "reported. [default: 20]")]


def sweep_cmd(model: Model, data: Data, out: Out, scores: ScoreFiles,
              more_scores: Annotated[list[Path] | None, typer.Argument(help="More score files.",
                                                                       show_default=False)] = None,
              ratios: Annotated[str | None, Opt(show_default=False,
                                                help="START:STOP:STEP or a comma list. [default: 0:0.9:0.1; with "
                                                     "--per-layer: K = 0..H-1 heads per layer]")] = None,
              global_: Global = True, split: Split = "test", batch_size: BatchSize = 16, task: Task = None,
              metric: Annotated[str, Opt(help="Metric to plot (ASR: accuracy = 1 - WER).")] = "accuracy",
              clip_seconds: ClipSeconds = None, device: Device = None, dtype: Dtype = DtypeName.float32,
              workers: Workers = 0, ffn_ratios: FfnRatios = None, ffn_scores: FfnScores = None,
              ffn_scorer: FfnScorer = "taylor", latency: Latency = False, batch_sizes: BatchSizes = None,
              seconds: Seconds = None, repeats: Repeats = None, overwrite: Overwrite = False,
              conv_ratios: ConvRatios = None, conv_scores: ConvScores = None, conv_scorer: ConvScorer = "taylor",
              layer_ratios: LayerRatios = None, layer_scores: LayerScores = None,
              layer_scorer: LayerScorer = "taylor") -> None:
    """Prune at every ratio (or K heads per layer) for every score file and random, and evaluate; with
    --ffn-ratios, the speed / accuracy frontier of heads x FFN neurons."""
    from ..errors import InputError
    from ..experiments.curves import parse_ratios
    from ..output_guard import check_output
    from ..specs import Data, Frontier, Ranking

    files = [*scores, *(more_scores or [])]
    inputs = inputs_of(model, data, *files, ffn_scores, conv_scores, layer_scores)
    check_output(out, overwrite, inputs=inputs)
    if ratios is not None:
        parse_ratios(ratios)  # a bad spec fails before anything loads
    extras = {"ffn_scores": ffn_scores, "conv_ratios": conv_ratios, "conv_scores": conv_scores,
              "layer_ratios": layer_ratios, "layer_scores": layer_scores, "latency": latency,
              "batch_sizes": batch_sizes, "seconds": seconds, "repeats": repeats}
    given = [f"--{k.replace('_', '-')}" for k, v in extras.items() if v not in (None, False)]
    if ffn_ratios is None and given:
        verb = "belongs" if len(given) == 1 else "belong"
        raise InputError(f"{', '.join(given)} {verb} to the frontier: add --ffn-ratios (e.g. --ffn-ratios 0 "
                         "for heads only)")
    if ffn_ratios is not None and len(files) != 1:
        raise InputError(f"--ffn-ratios draws the frontier of one head ranking: give exactly one --scores file "
                         f"(got {len(files)}); compare rankings without --ffn-ratios")
    frontier = None
    if ffn_ratios is not None:
        if ffn_scorer not in ("taylor", "magnitude"):
            raise InputError(f"--ffn-scorer must be one of taylor, magnitude, got {ffn_scorer!r}")
        ranking = Ranking(scores=ffn_scores) if ffn_scores is not None else Ranking(ffn_scorer)
        channels = Ranking(scores=conv_scores) if conv_scores is not None else Ranking(conv_scorer)
        frontier = Frontier(tuple(parse_ratios(ffn_ratios, "--ffn-ratios")), ranking, latency=latency,
                            batch_sizes=tuple(_sizes(batch_sizes)) if batch_sizes is not None else None,
                            seconds=1.0 if seconds is None else seconds, repeats=20 if repeats is None else repeats,
                            conv_ratios=tuple(parse_ratios(conv_ratios, "--conv-ratios")) if conv_ratios else (),
                            conv=channels,
                            layer_ratios=tuple(parse_ratios(layer_ratios, "--layer-ratios")) if layer_ratios else (),
                            layers=Ranking(scores=layer_scores) if layer_scores is not None else Ranking(layer_scorer))
    spec = Data(data, split=split, batch_size=batch_size, clip_seconds=clip_seconds, task=task and task.value,
                workers=workers)
    common = dict(ratios=ratios, scope="global" if global_ is not False else "per_layer", metric=metric,
                  frontier=frontier, device=device, dtype=dtype.value, progress=True)
    stem, table_of, plot = ("frontier", "frontier_table", "plot_frontier") if frontier else ("curve", "curve_table",
                                                                                            "plot_curves")
    from .. import plots
    from ..api import sweep

    _write(sweep(model, spec, files, **common), stem, getattr(plots, table_of), plot=getattr(plots, plot), out=out,
           overwrite=overwrite, inputs=inputs, title=f"{model_label(model)} on {data} ({split})")


def _write(result: dict, stem: str, table_of, plot, out: Path, overwrite: bool, inputs: list[Path],
           title: str) -> None:
    """<stem>.json, .md and .png into `out`, all or nothing; print the table."""
    import json

    from ..output_guard import atomic_dir

    table = table_of(result)
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:
        (tmp / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / f"{stem}.md").write_text(table)
        plot(result, tmp / f"{stem}.png", title=title)
    typer.echo(table)
    typer.echo(f"wrote {out}/{stem}.json, {stem}.png, {stem}.md")


def _sizes(spec: str | None) -> list[int] | None:
    """"1,8" -> [1, 8]; a one-line error for anything but positive whole numbers."""
    from ..errors import InputError

    if spec is None:
        return None
    try:
        sizes = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batch-sizes {spec!r}: give a comma list of whole numbers of at least 1, e.g. 1,8")
    return sizes
