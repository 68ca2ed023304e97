"""The files an exported graph travels with: config.json and the feature extractor / tokenizer files.

This is the layout ONNX Runtime-based loaders expect from a Hugging Face-style folder (optimum's
`model.onnx` + `config.json` + `preprocessor_config.json` / tokenizer files): the graph can be run with
onnxruntime and numpy alone, reading the preprocessing settings from the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..portable import TYPE_PREFIX
from ..portable.remote import transformers_class
from ..surgery import copy_preprocessing

# Graph file per export stage (optimum's names).
GRAPH_NAMES = {"export": "model.onnx", "optimize": "model_optimized.onnx", "quantize": "model_quantized.onnx"}


def write_config(model: nn.Module, folder: Path) -> None:
    """config.json of `model` in plain transformers form (its model_type; the removed heads recorded)."""
    config = json.loads(model.config.to_json_string(use_diff=False))  # the config's own order (ids 0, 1, 2, ... 10)
    config.pop("auto_map", None)
    config["model_type"] = str(config.get("model_type", "")).removeprefix(TYPE_PREFIX)
    config["architectures"] = [transformers_class(model).__name__]
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_preprocessing(model: nn.Module, folder: Path, source: str | None) -> list[str]:
    """Copy the source's feature extractor / tokenizer files; a speech model without any gets its default
    feature extractor. Returns the files written."""
    from ..data import default_feature_extractor

    if source is not None:
        copy_preprocessing(source, folder)
    if not (folder / "preprocessor_config.json").exists() and \
            getattr(model, "main_input_name", "") in ("input_values", "input_features"):
        default_feature_extractor(model.config).save_pretrained(folder)
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix in (".json", ".txt", ".model") and p.name != "config.json")


def write_model_files(model: nn.Module, folder: Path, source: str | None) -> list[str]:
    """config.json plus preprocessing files in `folder`; returns the names of the preprocessing files."""
    write_config(model, folder)
    return write_preprocessing(model, folder, source)
