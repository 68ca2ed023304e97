"""What scorers share besides the contract: batches (sizes, devices, sample ids), the model's scoring
state (`prepared`), score finishing for pruned models, and the clean forward pass with attention recorded.
No scorer class lives here, so `prunehead.scorers.parallel` (which runs scorers) and `base` (which
defines them) both build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..heads import head_adapter

Batch = dict[str, Any]
Objective = Callable[[Any, Batch], torch.Tensor]


def gather_results(results: list[torch.Tensor], ids: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate per-batch results on the CPU, ordered by sample id when `ids` is given."""
    merged = torch.cat([r.detach().cpu() for r in results])
    return merged if ids is None else merged[torch.argsort(ids.cpu())]


# ---------------------------------------------------------------------------------------------------
# Model state: eval mode, frozen parameters, restored in `finally`.


@contextlib.contextmanager
def prepared(model: nn.Module) -> Iterator[None]:
    """Validate `model`, put it in eval mode and freeze its parameters; restore both on exit."""
    from ..checks import check_model

    adapter = head_adapter(check_model(model, meta_ok=True))  # UnsupportedModelError for unsupported architectures
    check_model(model, finite=True, meta_ok=True)  # a NaN weight gives NaN scores (or a raw error deep in a scorer)
    if not any(adapter.kept_heads(model)):
        raise InputError("this model has no attention heads left to score")
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


def finish_scores(scores: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Check a scorer's (L, H) matrix and give the heads a pruned model no longer has (NaN) a score just
    below its lowest kept head, so they stay ranked first for removal (cumulative ratios keep working)."""
    adapter = head_adapter(model)
    expected = (adapter.num_layers, adapter.num_heads)
    if tuple(scores.shape) != expected or not scores.is_floating_point():
        raise RuntimeError(f"scorer returned {tuple(scores.shape)} {scores.dtype}, expected float {expected}")
    scores = scores.detach().cpu().clone()
    removed = ~kept_mask(model)
    if removed.any():
        kept = scores[~removed]
        scores[removed] = (kept.min() if kept.numel() else scores.new_zeros(())) - 1.0
    if not torch.isfinite(scores).all():
        raise RuntimeError("scorer produced NaN or inf scores; check the objective on these batches")
    return scores


def kept_mask(model: nn.Module) -> torch.Tensor:
    """(L, H) bool: True for the heads the model still has (all True unless it was pruned)."""
    adapter = head_adapter(model)
    mask = torch.zeros(adapter.num_layers, adapter.num_heads, dtype=torch.bool)
    for layer, heads in enumerate(adapter.kept_heads(model)):
        mask[layer, heads] = True
    return mask


def to_grid(per_layer: dict[int, torch.Tensor], model: nn.Module) -> torch.Tensor:
    """(B, L, H) float64 on the original head grid from {layer: (B, H_l) values of the current heads}.

    Heads a pruned model no longer has (and layers without heads) are NaN.
    """
    adapter = head_adapter(model)
    kept = adapter.kept_heads(model)
    B = next(iter(per_layer.values())).shape[0]
    grid = torch.full((B, adapter.num_layers, adapter.num_heads), float("nan"), dtype=torch.float64)
    for layer, values in per_layer.items():
        grid[:, layer, kept[layer]] = values[:, :len(kept[layer])].detach().cpu().double()
    return grid


def check_loss(loss: torch.Tensor, rows: int) -> torch.Tensor:
    """The objective's output as a (rows,) tensor; InputError when it is not one loss per sample."""
    if not isinstance(loss, torch.Tensor) or loss.shape != (rows,):
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise InputError(f"the objective must return one loss per sample, shape ({rows},); got {shape}")
    return loss


# ---------------------------------------------------------------------------------------------------
# Batches: device, per-sample indexing, equal-length splitting.


def check_batches(batches: Iterable[Batch], needed: bool) -> list[Batch]:
    batches = list(batches)
    if needed and not batches:
        raise InputError("no samples to score; check the data set, split and --samples")
    for batch in batches:
        if not isinstance(batch, dict):
            raise InputError(f"a batch must be a dict of model inputs, got {type(batch).__name__}")
        batch_size(batch)
    return batches


def model_inputs(model: nn.Module, batch: Batch) -> Batch:
    """The entries of `batch` that `model.forward` takes; labels only where the model needs them to build
    decoder inputs (encoder-decoder models without `decoder_input_ids`)."""
    names = set(inspect.signature(model.forward).parameters)
    keep_labels = getattr(model.config, "is_encoder_decoder", False) and "decoder_input_ids" not in batch
    return {k: v for k, v in batch.items() if k in names and (k != "labels" or keep_labels)}


def forward(model: nn.Module, batch: Batch) -> Any:
    """`model(**inputs)` with the batch's model inputs, moved to the model's device (no-op when there)."""
    return model(**to_device(model_inputs(model, batch), model_device(model)))


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Every tensor of a batch moved to `device` (other entries as they are); pinned tensors copy
    asynchronously."""
    return {k: v.to(device, non_blocking=v.is_pinned()) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def batch_size(batch: Batch) -> int:
    for key in ("input_values", "input_features", "input_ids", "inputs_embeds"):
        if isinstance(batch.get(key), torch.Tensor):
            return batch[key].shape[0]
    raise InputError(f"a batch needs input_values, input_features or input_ids; got keys {sorted(batch)}")


def index_batch(batch: Batch, index: torch.Tensor) -> Batch:
    """The rows `index` ((R,) long) of every per-sample entry of `batch` (rows may repeat)."""
    B = batch_size(batch)
    out: Batch = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == B:
            out[key] = value.index_select(0, index.to(value.device))
        elif isinstance(value, (list, tuple)) and len(value) == B:
            out[key] = [value[i] for i in index.tolist()]
        else:
            out[key] = value
    return out


def padding_changes_outputs(model: nn.Module) -> bool:
    """True for models whose outputs change under zero padding even with a mask (group-norm wav2vec2)."""
    config = model.config
    return getattr(config, "feat_extract_norm", None) == "group" and hasattr(config, "conv_dim")


def sample_batches(model: nn.Module, batches: list[Batch]) -> Iterator[tuple[Batch, torch.Tensor]]:
    """(batch, ids) pairs: ids number the samples across `batches`; padding-sensitive models get
    equal-length sub-batches with the padding removed (method.md §1.9), so a sample scores the same
    whatever it is batched with."""
    offset = 0
    for batch in batches:
        B = batch_size(batch)
        ids = torch.arange(offset, offset + B)
        offset += B
        mask = batch.get("attention_mask")
        if not padding_changes_outputs(model) or not isinstance(mask, torch.Tensor):
            yield batch, ids
            continue
        lengths = mask.long().sum(-1).cpu()
        for length in torch.unique(lengths).tolist():
            rows = torch.nonzero(lengths == length).flatten()
            part = index_batch(batch, rows)
            part = {k: v[:, :length] if k in ("input_values", "attention_mask") else v for k, v in part.items()}
            yield part, ids[rows]


# ---------------------------------------------------------------------------------------------------
# Clean attention maps.


def valid_frames(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """(B, L) bool valid-frame mask from the additive attention mask (B, 1, L, L) a layer received.

    The diagonal is read: a bidirectional padding mask blocks exactly the padded keys, so frame i is
    valid iff query i may attend to key i. No mask means every frame is valid.
    """
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    diag = torch.diagonal(mask[:, 0], dim1=-2, dim2=-1)  # (B, L)
    return (diag > torch.finfo(mask.dtype).min / 2).expand(batch, length)


@dataclasses.dataclass
class CleanPass:
    """What one clean forward pass recorded."""

    probs: dict[int, torch.Tensor]  # layer -> A_O (B, H, L, L)
    valid: torch.Tensor  # (B, L) bool
    captured: list | None = None  # per layer (hidden entering it, its other arguments), when a runner was given


def clean_pass(model: nn.Module, batch: Batch, layers: Iterable[int] | None = None,
               runner: Any = None) -> CleanPass:
    """One clean forward pass without gradients: every (kept) layer's attention maps and the valid frames;
    with a `LayerRunner`, also the hidden state entering each layer (for cached HIB)."""
    from ..control import controlled

    adapter = head_adapter(model)
    if layers is None:
        layers = [l for l, heads in enumerate(adapter.kept_heads(model)) if heads]  # emptied layers have none
    layers = list(layers)
    captured = None
    with torch.no_grad(), controlled(model) as ctl, ctl.recording(
            {l: (lambda probs, mask: (probs, mask)) for l in layers}) as store:
        with runner.capturing() if runner is not None else contextlib.nullcontext() as captured:
            forward(model, batch)
    if len(store) != len(layers):
        raise InputError("the attention of some encoder layers was not seen in the forward pass; "
                         "the model's attention must be routed by its family (prunehead.families)")
    probs = {l: store[l][0] for l in layers}
    first = probs[layers[0]]
    valid = valid_frames(store[layers[0]][1], first.shape[0], first.shape[-1], first.device)
    return CleanPass(probs, valid, captured)


def clean_attention(model: nn.Module, batch: Batch, layers: Iterable[int] | None = None,
                    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """({layer: A_O (B, H, L, L)}, valid (B, L)) from one clean forward pass without gradients."""
    clean = clean_pass(model, batch, layers)
    return clean.probs, clean.valid
