"""The model card (README.md) of a pruned folder, in the Hub's format (`huggingface_hub.ModelCard`).

Its metadata block names the base model (a Hub id), the library, the pipeline tag, the tags `pruned` and
`prunehead`, the license when the source's card states one, and the measured metrics (`model-index`, with
their data and split); the text gives the plan in words (heads and FFN neurons removed per layer),
parameters and MACs before and after, the metrics before and after pruning, and how to load the folder.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn
from transformers.utils import cached_file

CARD_NAME = "README.md"
TAGS = ["pruned", "prunehead"]


def pipeline_tag(model: nn.Module) -> str | None:
    """The Hub pipeline tag of `model`'s head (None for a bare encoder)."""
    from ..families import family_of
    from .remote import transformers_class

    name = transformers_class(model).__name__
    if name.endswith(("ForCTC", "ForConditionalGeneration")):
        return "automatic-speech-recognition"
    if name.endswith(("ForAudioClassification", "ForSequenceClassification")):
        return "text-classification" if family_of(model).name == "text" else "audio-classification"
    return None


def _hub_id(spec: str | None) -> str | None:
    """`spec` if it names a Hub repository ("org/name"), not a local folder."""
    if not spec or Path(spec).exists() or spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        return None
    return spec


def _license(source: str | None) -> str | None:
    """The license stated by the source model's own card (folder or cached Hub files), if any."""
    if not source:
        return None
    with contextlib.suppress(Exception):  # no card, no network, unparsable metadata: no license known
        path = cached_file(source, CARD_NAME, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if path:
            return ModelCard.load(path).data.license
    return None


def _auto_class(folder: Path) -> str | None:
    """The transformers Auto class config.json's `auto_map` names for the model (remote code)."""
    with contextlib.suppress(OSError, ValueError):
        auto_map = json.loads((folder / "config.json").read_text()).get("auto_map") or {}
        return next((k for k in auto_map if k.startswith("AutoModel")), None)
    return None


def _plain_checkpoint(folder: Path) -> bool:
    """Whether config.json names the architecture itself (no `prunehead-` type: no remote code needed)."""
    with contextlib.suppress(OSError, ValueError):
        return not str(json.loads((folder / "config.json").read_text()).get("model_type", "")).startswith("prunehead-")
    return False


def _removed_text(plan: Any) -> str:
    """"12 attention heads, 300 feed-forward neurons, 2 encoder layers" (the kinds the plan removes)."""
    parts = [f"{plan.num_pruned} attention heads", f"{plan.num_pruned_ffn} feed-forward neurons"]
    if plan.num_pruned_conv:
        parts.append(f"{plan.num_pruned_conv} front-end conv channels")
    if plan.num_pruned_layers:
        parts.append(f"{plan.num_pruned_layers} whole encoder layers ({', '.join(map(str, plan.pruned_layers))})")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _metrics(values: dict[str, Any] | None) -> dict[str, float]:
    return {k: v for k, v in (values or {}).items() if isinstance(v, float) and math.isfinite(v)}


def _eval_results(report: dict[str, Any], tag: str | None) -> list[EvalResult]:
    """The final model's metrics (after recovery, when there was one) on the report's data and split."""
    data = report.get("data") or {}
    final = report.get("metrics_after_recovery") or report.get("metrics_after_repair") or report.get("metrics_after")
    if not data or not final or tag is None:
        return []
    return [EvalResult(task_type=tag, dataset_type=str(data["spec"]), dataset_name=str(data["spec"]),
                       dataset_split=str(data["split"]), metric_type=key, metric_value=value)
            for key, value in _metrics(final).items()]


def _plan_table(plan: Any) -> list[str]:
    """One row per layer: heads and FFN neurons (the feed-forward channels) kept and removed."""
    rows = ["| layer | heads kept | heads removed | FFN neurons kept | FFN neurons removed |", "|---|---|---|---|---|"]
    for layer in range(plan.num_layers):
        if layer in plan.pruned_layers:
            rows.append(f"| {layer} | layer removed | all | layer removed | all |")
            continue
        heads = plan.pruned_heads.get(layer, ())
        neurons = plan.pruned_ffn.get(layer, ())
        width = f"{plan.intermediate_size - len(neurons)} of {plan.intermediate_size}" if plan.intermediate_size \
            else "all"
        rows.append(f"| {layer} | {plan.num_heads - len(heads)} of {plan.num_heads} | "
                    f"{', '.join(map(str, heads)) or '-'} | {width} | {len(neurons) or '-'} |")
    return rows


def _size_lines(report: dict[str, Any] | None, model: nn.Module) -> list[str]:
    from ..cost import count_params

    if not report or "before" not in report:
        return [f"Parameters: {count_params(model):,} (no size before pruning was recorded)."]
    b, a = report["before"], report["after"]
    return ["| | before | after | after / before |", "|---|---|---|---|",
            f"| heads | {b['heads']} | {a['heads']} | {a['heads'] / b['heads']:.3f} |",
            f"| parameters | {b['params']:,} | {a['params']:,} | {a['params'] / b['params']:.3f} |",
            f"| MACs ({report.get('macs_input', '1 s of audio')}) | {b['macs']:,} | {a['macs']:,} | "
            f"{a['macs'] / b['macs']:.3f} |"]


def _metric_lines(report: dict[str, Any] | None) -> list[str]:
    data = (report or {}).get("data")
    if not data:
        return ["No metrics were measured when this folder was written (prune with --data to record them)."]
    columns = [("before pruning", "metrics_before"), ("after pruning", "metrics_after"),
               ("after repair", "metrics_after_repair"), ("after recovery", "metrics_after_recovery")]
    columns = [(title, key) for title, key in columns if key in report]
    names = list(_metrics(report[columns[0][1]]))
    lines = [f"Measured on `{data['spec']}`, split `{data['split']}` ({data.get('samples', '?')} samples):", "",
             "| metric | " + " | ".join(t for t, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        cells = [f"{report[key].get(name, float('nan')):.4f}" for _, key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def model_card(model: nn.Module, folder: str | Path, plan: Any, report: dict[str, Any] | None = None,
               source: str | None = None) -> ModelCard:
    """The card of the pruned `model` saved in `folder` with `plan` (its config.json is read for the Auto
    class)."""
    tag = pipeline_tag(model)
    spec = (report or {}).get("model") or source
    data = ModelCardData(base_model=_hub_id(spec), library_name="transformers", pipeline_tag=tag, tags=list(TAGS),
                         license=_license(source or spec), model_name=f"{Path(str(spec or 'model')).name}-pruned",
                         eval_results=_eval_results(report or {}, tag) or None)
    auto = _auto_class(Path(folder))
    origin = f"[{spec}](https://huggingface.co/{spec})" if _hub_id(spec) else f"`{spec}`" if spec else "a model"
    plain = _plain_checkpoint(Path(folder))
    load = ["The folder carries its modeling code (`modeling_prunehead.py`): plain transformers loads it with "
            "`trust_remote_code=True` (read the file first; it only removes the listed heads and neurons).", "",
            "```python", f"from transformers import {auto}", "",
            f'model = {auto}.from_pretrained("path/to/this/folder", trust_remote_code=True)', "```", ""] if auto else \
        ["A plain transformers checkpoint (its config states the smaller shapes):", "",
         "```python", f"from transformers import {type(model).__name__}", "",
         f'model = {type(model).__name__}.from_pretrained("path/to/this/folder")', "```", ""] if plain else \
        ["This family has no portable modeling code yet: plain transformers refuses the folder.", ""]
    text = [f"# {data.model_name}", "",
            f"{origin} with {_removed_text(plan)} removed by prunehead (structured pruning: the weight matrices are "
            "smaller, not masked).", "",
            "## What was removed", "", *_plan_table(plan), "", "## Size", "", *_size_lines(report, model), "",
            "## Metrics", "", *_metric_lines(report), "", "## How to load it", "",
            *load, "With prunehead installed (no remote code runs):", "",
            "```python", "import prunehead", "", 'model = prunehead.load("path/to/this/folder")', "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(text))


def write_model_card(model: nn.Module, folder: str | Path, plan: Any, report: dict[str, Any] | None = None,
                     source: str | None = None) -> None:
    """Write `folder/README.md`, the card of the pruned model saved there with `plan` (a PruningPlan)."""
    (Path(folder) / CARD_NAME).write_text(str(model_card(model, folder, plan, report, source)), encoding="utf-8")
