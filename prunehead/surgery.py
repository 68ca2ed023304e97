"""Physical removal, the one verb that changes a model's structure, and save / load of the result.

`prune_(model, plan)` removes every unit of a plan, kind by kind (heads, FFN neurons, conv channels, then
whole layers; each kind's surgery lives with its unit kind). `units.heads.prune_heads_` slices the q/k/v
rows and output-projection columns of the removed heads (`transformers.pytorch_utils.prune_linear_layer`).
A layer that loses every head becomes a bias-only block: its attention output is the output projection's
bias, exactly what gating all heads to 0 gives.
The removed heads are recorded in `config.prunehead_pruned_heads`, so `load()` can rebuild the layout.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import re
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import cached_file

from .checks import check_model
from .errors import InputError
from .families.base import BiasOnly, EmptyAttention  # noqa: F401 - re-exported for old imports
from .units.conv import PRUNED_CONV_KEY, conv_plan_of, dense_config, prune_conv_
from .units.depth import original_layer_ids, removed_layers_of
from .units.ffn import PRUNED_FFN_KEY, ffn_plan_of, ffn_sites, prune_ffn_
from .units.heads import check_grid, prune_heads_
from .heads import PRUNED_HEADS_KEY, head_adapter, pruned_heads_of
from .pruning.plan import PruningPlan
from .portable import checkpoint_dtype, read_config, read_state_dict, weight_files, write_remote_code
from .portable.card import write_model_card
from .portable.remote import transformers_class

CHECKPOINT_DTYPE_ATTR = "prunehead_checkpoint_dtype"  # set by load(): the dtype of the weights on disk

# Files besides weights and config that a model directory may carry (feature extractor, tokenizer, ...).
PREPROCESSING_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json",
                       "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                       "added_tokens.json", "normalizer.json", "generation_config.json", "vocab.txt")


def prune_(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Remove every unit of `plan` from `model` in place: its heads, FFN neurons and conv channels (ids of
    each layer's original units; units already gone are skipped), then its whole layers, then every layer
    left with no heads and no neurons whose skip is exact. Layer ids are the model's current ones (a plan
    made for this model). Cost: no forward pass (one traced forward when the plan removes conv channels)."""
    from .units.kinds import remove_all_

    check_grid(model, plan)
    return remove_all_(model, plan)


def plan_of(model: nn.Module) -> PruningPlan:
    """The plan of every head (and FFN neuron, conv channel) removed from `model` so far."""
    adapter = head_adapter(model)
    plan = ffn_plan_of(model, PruningPlan(adapter.num_layers, adapter.num_heads,
                                          {l: tuple(h) for l, h in pruned_heads_of(model).items() if h}))
    return conv_plan_of(model, plan)


def history_of(model: nn.Module) -> PruningPlan:
    """Everything removed from `model` since it was dense, in the dense model's ids: `plan_of` mapped back
    through the removed layers (`pruned_layers`); equal to `plan_of` for a model that lost no layer. plan.json
    holds this plan, so `prune --plan` on the dense model repeats it."""
    plan, gone = plan_of(model), removed_layers_of(model)
    if not gone:
        return plan
    ids = original_layer_ids(model)
    return dataclasses.replace(plan, num_layers=len(ids) + len(gone),
                               pruned_heads={ids[l]: h for l, h in plan.pruned_heads.items()},
                               pruned_ffn={ids[l]: n for l, n in plan.pruned_ffn.items()}, pruned_layers=tuple(gone))


def save_pretrained(model: nn.Module, out_dir: str | Path, source: str | Path | None = None,
                    processor: object | None = None, dtype: torch.dtype | None = None,
                    report: dict | None = None) -> None:
    """Write weights, config (original layout + removed heads), plan.json, preprocessing files and, for a
    pruned model, its model card (README.md: `prunehead.portable.card`; `report` adds sizes and metrics).

    A pruned model also gets `modeling_prunehead.py` and config.json `auto_map` entries, so that
    `AutoModelFor<Task>.from_pretrained(out_dir, trust_remote_code=True)` loads it exactly, and plain
    transformers without remote code refuses it (`prunehead.portable`).

    Args:
        source: the folder or hub id the model came from: its preprocessing files are copied.
        dtype: weight dtype on disk; default: the dtype of the checkpoint the model was loaded from (an fp16
            checkpoint stays fp16), else the model's own.
    """
    check_model(model)  # before anything is written: meta weights, a non-model
    out_dir = Path(out_dir)
    target = dtype or checkpoint_dtype_of(model) or _source_dtype(source) or next(model.parameters()).dtype
    saved = model if next(model.parameters()).dtype == target else copy.deepcopy(model).to(target)
    saved.save_pretrained(out_dir)
    plan, history = plan_of(model), history_of(model)
    history.save(out_dir / "plan.json")
    if _needs_remote_code(model, plan):
        if plan.num_pruned:
            _add_placeholders(model, out_dir, target)
        write_remote_code(model, out_dir)
    if processor is not None:
        processor.save_pretrained(out_dir)
    if source is not None:
        copy_preprocessing(str(source), out_dir)
    if plan.num_pruned or plan.num_pruned_ffn or plan.num_pruned_conv or history.num_pruned_layers:
        write_model_card(model, out_dir, history, report, str(source) if source is not None else None)


def _needs_remote_code(model: nn.Module, plan: PruningPlan) -> bool:
    """Whether plain transformers needs the folder's modeling code to build the pruned layout (conv channels
    only where the config cannot state the widths)."""
    if plan.num_pruned or plan.num_pruned_ffn:
        return True
    return bool(plan.num_pruned_conv) and not head_adapter(model).family.conv_widths_in_config


def _add_placeholders(model: nn.Module, out_dir: Path, dtype: torch.dtype) -> None:
    """Store the weights an emptied layer lost as 0-size tensors (transformers 4 did the same).

    A plain transformers class then fails on their size instead of re-initialising the layer at random;
    `load` and the folder's remote code ignore them.
    """
    config = copy.deepcopy(model.config)
    delattr(config, PRUNED_HEADS_KEY)
    with torch.device("meta"):
        full = transformers_class(model)(config)
    present = set(model.state_dict())
    placeholders = {key: torch.zeros(0, dtype=dtype) for key in full.state_dict() if key not in present}
    if not placeholders:
        return
    index_path = out_dir / "model.safetensors.index.json"
    if index_path.exists():  # sharded: one more shard
        index = json.loads(index_path.read_text())
        index["weight_map"].update(dict.fromkeys(placeholders, "model-placeholders.safetensors"))
        save_file(placeholders, out_dir / "model-placeholders.safetensors", metadata={"format": "pt"})
        index_path.write_text(json.dumps(index, indent=2) + "\n")
        return
    weights = out_dir / "model.safetensors"
    save_file({**load_file(weights), **placeholders}, weights, metadata={"format": "pt"})


def copy_preprocessing(source: str, out_dir: Path) -> None:
    """Copy the feature extractor / tokenizer files of a folder or (cached) hub id that `out_dir` lacks."""
    for name in PREPROCESSING_FILES:
        if (out_dir / name).exists():
            continue
        found = Path(source) / name if Path(source).is_dir() else None
        if found is None:
            try:
                cached = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                                     _raise_exceptions_for_connection_errors=False)
            except (OSError, ValueError):
                cached = None
            found = Path(cached) if cached else None
        if found is not None and found.exists():
            shutil.copy2(found, out_dir / name)


def checkpoint_dtype_of(model: nn.Module) -> torch.dtype | None:
    """The dtype of the weights `model` was loaded from by `load` (None if it was built in code)."""
    return getattr(model, CHECKPOINT_DTYPE_ATTR, None)


def _source_dtype(source: str | Path | None) -> torch.dtype | None:
    if source is None:
        return None
    try:
        return checkpoint_dtype(weight_files(str(source)))
    except (InputError, OSError, ValueError):
        return None


def _model_class(config: transformers.PretrainedConfig, path: str) -> type:
    names = getattr(config, "architectures", None) or []
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    cls = getattr(transformers, name, None) or getattr(transformers, name.removeprefix("Pruned"), None) \
        if name else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise InputError(f"{path}: config.json names no known model class (architectures={names}); "
                         "save the model with save_pretrained")
    return cls


def load_config(path: str | Path) -> transformers.PretrainedConfig:
    """The config of a model folder or hub id (pruned or not, any layout prunehead reads), no remote code run."""
    return read_config(str(path))


def load(path: str | Path, model_class: type | None = None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a model folder or hub id, pruned or not, in eval mode, through the Hugging Face cache.

    Reads prunehead's folders (with or without remote code), transformers 4 folders with `pruned_heads`
    and plain checkpoints; `HF_HUB_OFFLINE=1` loads hub ids from the local cache. No remote code is run.

    Args:
        path: a folder or a hub id ("org/name").
        model_class: override the class named in config.json (e.g. WhisperForAudioClassification).
        dtype: parameter dtype (default float32, also for fp16 checkpoints; `save_pretrained` writes the
            checkpoint's dtype back).

    Raises:
        InputError: no model there, or weights missing from it (never silently re-initialised).
    """
    path_str = str(path)
    config = read_config(path_str)
    cls = model_class or _model_class(config, path_str)
    files = weight_files(path_str)
    pruned = getattr(config, PRUNED_HEADS_KEY, None)
    pruned_ffn = getattr(config, PRUNED_FFN_KEY, None)
    pruned_conv = getattr(config, PRUNED_CONV_KEY, None)
    try:
        if not pruned and not pruned_ffn and not pruned_conv:
            model = _load_plain(cls, path_str, config, dtype)
        else:
            config = dense_config(config)  # the full conv front end: the channels are removed again below
            for key in (PRUNED_HEADS_KEY, PRUNED_FFN_KEY):
                if hasattr(config, key):
                    delattr(config, key)
            model = _load_pruned(cls, path_str, config, pruned=pruned or {}, files=files, dtype=dtype,
                                 pruned_ffn=pruned_ffn or {}, pruned_conv=pruned_conv or {})
    except pickle.UnpicklingError:
        raise InputError(f"{path_str}: {Path(files[0]).name} is not a file of tensors only: prunehead never "
                         "unpickles other objects, which could run code; convert it to model.safetensors where you "
                         "trust it, or use another copy of the model") from None
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "alloc" not in str(err).lower():
            raise
        raise InputError(f"{path_str}: not enough memory to build the model its config.json describes "
                         f"({type(err).__name__}); check the sizes in config.json") from None
    setattr(model, CHECKPOINT_DTYPE_ATTR, checkpoint_dtype(files))
    return model.eval()


def _load_plain(cls: type, path: str, config: transformers.PretrainedConfig, dtype: torch.dtype) -> nn.Module:
    model, info = cls.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True)
    head_adapter(model)  # fail early on unsupported architectures
    _refuse_extra_layers(path, info["unexpected_keys"], len(head_adapter(model).sites))
    missing = [k for k in info["missing_keys"] if not _is_tied(model, k)]
    if missing:
        raise InputError(f"{path}: the checkpoint lacks {len(missing)} weights of {cls.__name__} "
                         f"({', '.join(sorted(missing)[:4])}{', ...' if len(missing) > 4 else ''}), which would be "
                         "random; load it with the class it was saved as, or fine-tune it first (prunehead finetune)")
    return model


def _load_pruned(cls: type, path: str, config: transformers.PretrainedConfig, pruned: dict, files: list[str],
                 dtype: torch.dtype, pruned_ffn: dict | None = None, pruned_conv: dict | None = None) -> nn.Module:
    model = cls(config).to(dtype)
    adapter = head_adapter(model)
    prune_heads_(model, PruningPlan.from_json({"format": "prunehead.plan", "num_layers": adapter.num_layers,
                                               "num_heads": adapter.num_heads, "pruned_heads": pruned}, path))
    if pruned_ffn:  # per-layer FFN widths, after the heads
        prune_ffn_(model, PruningPlan.from_json({"format": "prunehead.plan", "num_layers": adapter.num_layers,
                                                 "num_heads": adapter.num_heads, "pruned_ffn": pruned_ffn,
                                                 "intermediate_size": ffn_sites(model)[0].intermediate_size}, path))
    if pruned_conv:  # the front end's channels (torch-pruning traces the fresh model once)
        width = max(head_adapter(model).family.conv_widths(model.config))
        plan = PruningPlan.from_json({"format": "prunehead.plan", "num_layers": adapter.num_layers,
                                      "num_heads": adapter.num_heads, "pruned_conv": pruned_conv,
                                      "conv_width": width}, path)
        prune_conv_(model, plan.pruned_conv)
    state = {k: v for k, v in read_state_dict(files).items() if v.numel() or k in model.state_dict()}
    missing, unexpected = model.load_state_dict(state, strict=False)  # (transformers 4 kept 0-size q/k/v)
    model.tie_weights()
    generation = cached_file(path, "generation_config.json", _raise_exceptions_for_missing_entries=False,
                             _raise_exceptions_for_connection_errors=False)
    if generation:
        model.generation_config = transformers.GenerationConfig.from_pretrained(path)
    untied = [k for k in missing if not _is_tied(model, k)]
    if unexpected or untied:
        raise InputError(f"{path}: weights do not match the pruned layout (missing {untied[:3]}, "
                         f"unexpected {unexpected[:3]}); re-save the model with prunehead")
    return model


def _refuse_extra_layers(path: str, unexpected: list[str], layers: int) -> None:
    """InputError when the weights hold encoder layers the config does not have (they would be dropped)."""
    extra = sorted({int(m[1]) for k in unexpected if "decoder" not in k
                    and (m := re.search(r"\.layers?\.(\d+)\.", f".{k}")) and int(m[1]) >= layers})
    if extra:
        raise InputError(f"{path}: the weights hold layer(s) {extra[:5]} but config.json says {layers} layers; "
                         "fix num_hidden_layers in config.json (layers are never dropped silently)")


def _is_tied(model: nn.Module, key: str) -> bool:
    """True if parameter `key` shares storage with another parameter (tied weights are saved once)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(key)
    return target is not None and any(p is target for k, p in params.items() if k != key)
