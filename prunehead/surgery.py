"""Physical head removal, the only code that changes a model's structure, and save / load of the result.

`prune_(model, plan)` slices the q/k/v rows and output-projection columns of the removed heads
(`transformers.pytorch_utils.prune_linear_layer`). A layer that loses every head becomes a bias-only
block: its attention output is the output projection's bias, exactly what gating all heads to 0 gives.
The removed heads are recorded in `config.prunehead_pruned_heads`, so `load()` can rebuild the layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from .errors import InputError
from .families.base import BiasOnly, EmptyAttention  # noqa: F401 - re-exported for old imports
from .ffn import PRUNED_FFN_KEY, ffn_plan_of, ffn_sites, prune_ffn_
from .heads import PRUNED_HEADS_KEY, head_adapter, pruned_heads_of
from .plan import PruningPlan

# Files besides weights and config that a model directory may carry (feature extractor, tokenizer, ...).
PREPROCESSING_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json",
                       "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                       "added_tokens.json", "normalizer.json", "generation_config.json", "vocab.txt")


def prune_(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Remove the heads of `plan` (original ids) from `model` in place; heads already gone are skipped."""
    adapter = head_adapter(model)
    if (plan.num_layers, plan.num_heads) != (adapter.num_layers, adapter.num_heads):
        raise InputError(f"the plan is for {plan.num_layers} x {plan.num_heads} heads but the model has "
                         f"{adapter.num_layers} x {adapter.num_heads}; make the plan for this model")
    kept_all = adapter.kept_heads(model)
    for site, kept in zip(adapter.sites, kept_all):
        remove = set(plan.pruned_heads.get(site.layer, ())) & set(kept)
        if not remove:
            continue
        new_kept = [h for h in kept if h not in remove]
        if new_kept:
            adapter.family.slice_heads_(site, [kept.index(h) for h in new_kept], adapter.head_dim)
        else:
            adapter.family.empty_(site)
    merged = PruningPlan(adapter.num_layers, adapter.num_heads,
                         {l: tuple(h) for l, h in pruned_heads_of(model).items()}).union(plan)
    setattr(model.config, PRUNED_HEADS_KEY, {str(l): list(h) for l, h in merged.pruned_heads.items()})
    return model


def plan_of(model: nn.Module) -> PruningPlan:
    """The plan of every head (and FFN neuron) removed from `model` so far."""
    adapter = head_adapter(model)
    return ffn_plan_of(model, PruningPlan(adapter.num_layers, adapter.num_heads,
                                          {l: tuple(h) for l, h in pruned_heads_of(model).items() if h}))


def save_pretrained(model: nn.Module, out_dir: str | Path, source: str | Path | None = None,
                    processor: object | None = None) -> None:
    """Write weights, config (original layout + removed heads), plan.json and preprocessing files."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    plan_of(model).save(out_dir / "plan.json")
    if processor is not None:
        processor.save_pretrained(out_dir)
    if source is not None and Path(source).is_dir():
        for name in PREPROCESSING_FILES:
            if (Path(source) / name).exists() and not (out_dir / name).exists():
                shutil.copy2(Path(source) / name, out_dir / name)


def _model_class(config: transformers.PretrainedConfig, path: str) -> type:
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else None
    if cls is None:
        raise InputError(f"{path}: config.json names no known model class (architectures={names}); "
                         "save the model with save_pretrained")
    return cls


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(f"{path} holds no *.safetensors weights; save the model with prunehead or save_pretrained")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return state


def load(path: str | Path, model_class: type | None = None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a model directory or hub id, pruned by prunehead or not, in eval mode.

    Args:
        path: a directory written by prunehead / save_pretrained, or a hub id (needs network).
        model_class: override the class named in config.json (e.g. WhisperForAudioClassification).
        dtype: parameter dtype (default float32, also for fp16 checkpoints).
    """
    path_str = str(path)
    try:
        config = transformers.AutoConfig.from_pretrained(path_str)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a model from {path_str!r}: not a model directory or reachable hub id "
                         f"({str(err).splitlines()[0]})") from None
    cls = model_class or _model_class(config, path_str)
    pruned = getattr(config, PRUNED_HEADS_KEY, None)
    pruned_ffn = getattr(config, PRUNED_FFN_KEY, None)
    if not pruned and not pruned_ffn:
        model = cls.from_pretrained(path_str, config=config, dtype=dtype)
        head_adapter(model)  # fail early on unsupported architectures
        return model.eval()
    for key in (PRUNED_HEADS_KEY, PRUNED_FFN_KEY):
        if hasattr(config, key):
            delattr(config, key)
    model = cls(config).to(dtype)
    adapter = head_adapter(model)
    prune_(model, PruningPlan.from_json({"format": "prunehead.plan", "num_layers": adapter.num_layers,
                                         "num_heads": adapter.num_heads, "pruned_heads": pruned or {}}, path_str))
    if pruned_ffn:  # per-layer FFN widths, after the heads
        size = ffn_sites(model)[0].intermediate_size
        prune_ffn_(model, PruningPlan.from_json({"format": "prunehead.plan", "num_layers": adapter.num_layers,
                                                 "num_heads": adapter.num_heads, "intermediate_size": size,
                                                 "pruned_ffn": pruned_ffn}, path_str))
    missing, unexpected = model.load_state_dict(_state_dict(Path(path_str)), strict=False)
    model.tie_weights()
    if (Path(path_str) / "generation_config.json").exists():
        model.generation_config = transformers.GenerationConfig.from_pretrained(path_str)
    untied = [k for k in missing if not _is_tied(model, k)]
    if unexpected or untied:
        raise InputError(f"{path_str}: weights do not match the pruned layout (missing {untied[:3]}, "
                         f"unexpected {unexpected[:3]}); re-save the model with prunehead")
    return model.eval()


def _is_tied(model: nn.Module, key: str) -> bool:
    """True if parameter `key` shares storage with another parameter (tied weights are saved once)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(key)
    return target is not None and any(p is target for k, p in params.items() if k != key)
