"""Read a model folder or hub id through the Hugging Face cache (offline too), without running its code.

Three layouts are understood: prunehead's (`model_type: "prunehead-<type>"` or, before remote code, a plain
type with `prunehead_pruned_heads`), transformers 4's `pruned_heads` (TextPruner, nn_pruning, bertology:
{"<layer>": [original head ids]}, the same layout as prunehead's), and plain checkpoints.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers.utils import cached_file

from ..errors import InputError
from .template import PRUNED_CONV_KEY, PRUNED_FFN_KEY, PRUNED_HEADS_KEY, TYPE_PREFIX
from .trust import check_custom_code

LEGACY_PRUNED_KEY = "pruned_heads"  # transformers 4's config attribute
_SINGLE = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Sizes a config.json states: whole numbers of at least 1 (2.7 or true are refused, never truncated).
SIZE_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "d_model",
             "encoder_attention_heads", "encoder_layers", "encoder_ffn_dim", "num_mel_bins", "vocab_size")
MAX_PARAMS = 20e9  # a config asking for more parameters than this is refused (an absurd size, not a model)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def read_config(spec: str, **hub: Any) -> transformers.PretrainedConfig:
    """The config of folder or hub id `spec`, with removed heads (if any) in `config.prunehead_pruned_heads`.

    Args:
        hub: passed to the Hugging Face resolution (revision, cache_dir, token, local_files_only).

    Raises:
        InputError: no config.json there, a file instead of a folder, a model type transformers does not
            know, sizes or removed-head ids that are not whole numbers, or code to run without an opt-in
            (`prunehead.portable.trust`).
    """
    if Path(spec).is_file():
        raise InputError(f"{spec} is a file; pass the model folder that holds config.json and the weights")
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
    check_custom_code(spec)
    _check_sizes(spec, config_dict)
    for key in (PRUNED_HEADS_KEY, PRUNED_FFN_KEY, PRUNED_CONV_KEY, LEGACY_PRUNED_KEY):
        _check_ids(spec, key, config_dict.get(key) or {})
    legacy = _legacy_pruned(config_dict.get(LEGACY_PRUNED_KEY) or {})
    config_dict = {k: v for k, v in config_dict.items() if k not in ("auto_map", LEGACY_PRUNED_KEY)}
    if legacy and not config_dict.get(PRUNED_HEADS_KEY):
        config_dict[PRUNED_HEADS_KEY] = legacy
    return transformers.CONFIG_MAPPING[model_type].from_dict({**config_dict, "model_type": model_type})


def _check_sizes(spec: str, config: dict[str, Any]) -> None:
    """InputError naming config.json's key for a size that is not a whole number >= 1, heads that do not
    divide the width, or sizes whose model could not be allocated."""
    for key in SIZE_KEYS:
        value = config.get(key)
        if key in config and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{spec}: config.json has {key} = {value!r}; it must be a whole number of at least 1")
    width, heads = config.get("hidden_size") or config.get("d_model"), \
        config.get("num_attention_heads") or config.get("encoder_attention_heads")
    if width and heads and width % heads:
        raise InputError(f"{spec}: config.json's {heads} heads do not divide its width {width}; fix config.json")
    layers = config.get("num_hidden_layers") or config.get("encoder_layers") or 1
    ffn = config.get("intermediate_size") or config.get("encoder_ffn_dim") or 4 * (width or 1)
    params = layers * (4 * (width or 1) ** 2 + 2 * (width or 1) * ffn)
    if params > MAX_PARAMS:
        raise InputError(f"{spec}: config.json's sizes ask for about {params:.1e} parameters (width {width}, "
                         f"{layers} layers); that is no speech model: fix config.json")


def _check_ids(spec: str, key: str, raw: Any) -> None:
    """InputError for a removed-heads / neurons map that is not {"<layer>": [whole numbers]}."""
    ok = isinstance(raw, dict) and all(
        isinstance(layer, str) and layer.isdigit() and isinstance(ids, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids) for layer, ids in raw.items())
    if not ok:
        raise InputError(f"{spec}: config.json's {key} must map layer numbers to lists of whole-number ids, "
                         f"e.g. {{\"0\": [1, 3]}}; got {json.dumps(raw)[:80]}")


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
            shards = _shards(index)
            return [cached_file(spec, shard, **hub) for shard in shards]
    raise InputError(f"{spec} holds no model.safetensors or pytorch_model.bin weights (nor a sharded index); "
                     "save the model with prunehead or save_pretrained")


def _shards(index: str) -> list[str]:
    """The shard names of a sharded checkpoint's index: plain file names beside it, never a path elsewhere."""
    try:
        with open(index) as handle:
            weight_map = json.load(handle)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{index} is not a sharded-checkpoint index ({_first_line(err)}); re-save the model") from None
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise InputError(f"{index} names the shard {shard!r}, outside the model folder; shards must be file "
                             "names beside the index")
    return shards


def read_state_dict(files: list[str]) -> dict[str, torch.Tensor]:
    """All tensors of the weight files (safetensors, or pickled tensors loaded with weights_only)."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file) if file.endswith(".safetensors") else load_pickled(file))
    return state


def load_pickled(file: str) -> dict[str, torch.Tensor]:
    """A pytorch_model.bin of tensors only (`weights_only=True`); anything else is refused, never unpickled."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the restricted unpickler's refusal (its advice is not ours), or a broken file
        raise InputError(f"{file} is not a file of tensors only: prunehead never unpickles other objects, which "
                         "could run code; convert it to model.safetensors where you trust it, or use another "
                         "copy of the model") from None


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
