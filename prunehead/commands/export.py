"""`prunehead export onnx`: a folder with a verified ONNX graph, config, preprocessing files and export.json."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .options import Model, Overwrite, Positive, inputs_of

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Export a pruned (or unpruned) model for deployment.")


class Quantize(str, Enum):
    int8 = "int8"
    int8_conv = "int8-conv"


@app.command("onnx")
def onnx(
    model: Model,
    out: Annotated[Path, typer.Option(help="The folder to write: model.onnx (+ optimized / int8 graphs), config.json, "
                                           "the feature extractor / tokenizer files and export.json.")],
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's).")] = None,
    optimize: Annotated[bool, typer.Option(help="Apply ONNX Runtime's extended graph optimizations (fusions; "
                                                "the graph then needs ONNX Runtime's CPU provider).")] = False,
    quantize: Annotated[Quantize | None, typer.Option(help="Dynamic quantization of the MatMul weights, the "
                                                          "convolutions left fp32 (int8-conv: them too; often "
                                                          "slower); checked by argmax agreement, not --atol.")] = None,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch on inputs of other lengths; "
                                             "fail above --atol.")] = True,
    atol: Annotated[float, typer.Option(callback=Positive, help="Largest accepted absolute output difference.")] = 1e-4,
    data: Annotated[str | None, typer.Option(help="Data spec (as for `prunehead eval`): report the metric "
                                                  "of PyTorch and of each exported / optimized / quantized "
                                                  "graph.")] = None,
    split: Annotated[str, typer.Option(help="Split of --data to use.")] = "test",
    baseline: Annotated[str | None, typer.Option(help="Unpruned model to time against (default: rebuilt "
                                                         "from the model's config).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per model and input; the median is reported.")] = 20,
    overwrite: Overwrite = False,
) -> None:
    """Export MODEL to ONNX with dynamic batch and length, check it, and time it against the unpruned model."""
    from ..api import export_onnx
    from ..export.pipeline import WRITTEN, ExportOptions
    from ..output_guard import check_output

    ExportOptions(opset=opset).validate()  # before anything loads or is traced
    out = check_output(out, overwrite, inputs=inputs_of(model, data, baseline), kind="dir", writes=WRITTEN)
    from ..export.pipeline import ExportOptions

    options = ExportOptions(opset=opset, optimize=optimize, quantize=quantize.value if quantize else None,
                            check=check, atol=atol, repeats=repeats)
    from ..specs import Data

    summary = export_onnx(model, out, options, data=Data(data, split=split) if data else None, baseline=baseline,
                          overwrite=overwrite, progress=True)
    _print(summary, out)


def _print(summary: dict, out: Path) -> None:
    checks = dict(summary["checks"])
    data = checks.pop("data", None)
    for stage, result in checks.items():
        typer.echo(f"check {stage}: max |ORT - PyTorch| = {result['max_abs_diff']:.2e}, "
                   f"argmax agreement {result['argmax_agreement']:.1%} on {len(result['inputs'])} inputs")
    if data is not None:
        for run, metrics in data["metrics"].items():
            typer.echo(f"{data['spec']} ({data['split']}) {run}: accuracy {metrics['accuracy']:.4f}")
    from .formatting import format_ratio, format_speedup

    model, unpruned = summary["model"], summary["unpruned"]
    typer.echo(f"params {model['params']:,} vs unpruned {unpruned['params']:,}: "
               f"{format_ratio(unpruned['params'], model['params'])}; "
               f"file {model['file_bytes']:,} B (unpruned {unpruned['file_bytes']:,} B)")
    for row in summary["latency"]["rows"]:
        macs = model["macs_batch1"][str(row["length"])], unpruned["macs_batch1"][str(row["length"])]
        slower = row["model_ms"] > row["unpruned_ms"] * 1.005
        same = " (same stages)" if "dense_fp32_ms" in row else ""
        fp32 = f"; vs dense fp32 {row['dense_fp32_ms']:.2f} ms: {format_speedup(row['dense_fp32_ms'], row['model_ms'])}" \
            if "dense_fp32_ms" in row else ""
        typer.echo(f"batch {row['batch']:>2} length {row['length']:>6}: {row['model_ms']:.2f} ms vs unpruned{same} "
                   f"{row['unpruned_ms']:.2f} ms: {format_speedup(row['unpruned_ms'], row['model_ms'])}{fp32}; MACs "
                   f"{format_ratio(macs[1], macs[0])}" + ("  <- SLOWER than unpruned" if slower else ""))
    files = [*summary["graphs"].values(), "config.json", *summary["preprocessing"], "export.json"]
    typer.echo(f"wrote {out}/ ({', '.join(files)})")
