"""Read a model folder or hub id through the Hugging Face cache (offline too), without running its code.

Three layouts are understood: prunehead's (`model_type: "prunehead-<type>"` or, before remote code, a plain
type with `prunehead_pruned_heads`), transformers 4's `pruned_heads` (TextPruner, nn_pruning, bertology:
{"<layer>": [original head ids]}, the same layout as prunehead's), and plain checkpoints.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers.utils import cached_file

from ..errors import InputError
from .template import PRUNED_HEADS_KEY, TYPE_PREFIX

LEGACY_PRUNED_KEY = "pruned_heads"  # transformers 4's config attribute
_SINGLE = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def read_config(spec: str, **hub: Any) -> transformers.PretrainedConfig:
    """The config of folder or hub id `spec`, with removed heads (if any) in `config.prunehead_pruned_heads`.

    Args:
        hub: passed to the Hugging Face resolution (revision, cache_dir, token, local_files_only).

    Raises:
        InputError: no config.json there, or a model type transformers does not know.
    """
    try:
        config_dict, _ = transformers.PretrainedConfig.get_config_dict(spec, **hub)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a model from {spec!r}: not a model directory or reachable hub id "
                         f"({_first_line(err)})") from None
    declared = config_dict.get("model_type")
    model_type = str(declared or "").removeprefix(TYPE_PREFIX)
    if not declared:
        raise InputError(f"cannot load a model from {spec!r}: its config.json has no model_type; "
                         "save the model with save_pretrained")
    if model_type not in transformers.CONFIG_MAPPING:
        raise InputError(f"cannot load a model from {spec!r}: model_type {declared!r} is unknown to "
                         f"transformers {transformers.__version__}; upgrade transformers")
    legacy = _legacy_pruned(config_dict.get(LEGACY_PRUNED_KEY) or {})
    config_dict = {k: v for k, v in config_dict.items() if k not in ("auto_map", LEGACY_PRUNED_KEY)}
    if legacy and not config_dict.get(PRUNED_HEADS_KEY):
        config_dict[PRUNED_HEADS_KEY] = legacy
    return transformers.CONFIG_MAPPING[model_type].from_dict({**config_dict, "model_type": model_type})


def _legacy_pruned(raw: dict[str, list[int]]) -> dict[str, list[int]]:
    """transformers 4's `pruned_heads` ({layer: [original head ids]}) in prunehead's form."""
    return {str(int(layer)): sorted(int(h) for h in heads) for layer, heads in raw.items() if heads}


def weight_files(spec: str, **hub: Any) -> list[str]:
    """Local paths of the weight files of `spec` (one file or the shards of an index), resolved like transformers.

    Raises:
        InputError: neither model.safetensors nor pytorch_model.bin (or their index) is there.
    """
    def find(name: str) -> str | None:
        return cached_file(spec, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub)

    for name in _SINGLE:
        if path := find(name):
            return [path]
    for name in _INDEXES:
        if index := find(name):
            with open(index) as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
            return [cached_file(spec, shard, **hub) for shard in shards]
    raise InputError(f"{spec} holds no model.safetensors or pytorch_model.bin weights (nor a sharded index); "
                     "save the model with prunehead or save_pretrained")


def read_state_dict(files: list[str]) -> dict[str, torch.Tensor]:
    """All tensors of the weight files (safetensors, or pickled tensors loaded with weights_only)."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file) if file.endswith(".safetensors")
                     else torch.load(file, map_location="cpu", weights_only=True))
    return state


def checkpoint_dtype(files: list[str]) -> torch.dtype | None:
    """The floating dtype of most of a checkpoint's weights (by element count, from the safetensors headers)."""
    counts: Counter[torch.dtype] = Counter()
    for file in files:
        if not file.endswith(".safetensors"):
            return None
        with safe_open(file, "pt") as handle:
            for key in handle.keys():
                tensor = handle.get_slice(key)
                counts[_SAFETENSORS_DTYPES.get(tensor.get_dtype())] += math.prod(tensor.get_shape())
    counts.pop(None, None)
    return counts.most_common(1)[0][0] if counts else None


_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
