"""Feed-forward (FFN) neurons: their layout, a neuron gate, and physical removal through torch-pruning.

Every encoder layer has a feed-forward block `output(act(intermediate(x)))` of I intermediate neurons
(`Family.ffn_sites`). Neuron i of a layer is row i of `intermediate` (weight and bias) and column i of
`output`. Removing it deletes both; gating it multiplies its activation (the input of `output`) by 0, which
gives the same output exactly, since the column it meets is all that it touches. The removed neurons are
recorded in `config.prunehead_pruned_ffn` ({"<layer>": [original ids]}) so `prunehead.load` can rebuild
the per-layer widths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch_pruning as tp
from torch import nn

from ..errors import InputError
from ..families import family_of
from ..families.base import FFNSite
from ..pruning.plan import PruningPlan
from ..portable.template import PRUNED_FFN_KEY  # config.json: {"<layer>": [original neuron ids]}

__all__ = ["PRUNED_FFN_KEY", "ffn_plan_of", "ffn_sites", "kept_neurons", "neuron_gating", "prune_ffn_",
           "pruned_ffn_of"]


def ffn_sites(model: nn.Module) -> list[FFNSite]:
    """The feed-forward block of every encoder layer of `model`, in layer order (asks the model's family)."""
    return family_of(model).ffn_sites(model)


def pruned_ffn_of(model: nn.Module) -> dict[int, list[int]]:
    """Original ids of the neurons already removed from `model`, per layer (from its config)."""
    raw = getattr(getattr(model, "config", None), PRUNED_FFN_KEY, None) or {}
    return {int(layer): sorted(int(i) for i in ids) for layer, ids in raw.items()}


def kept_neurons(model: nn.Module, sites: list[FFNSite] | None = None) -> list[list[int]]:
    """Original ids of the neurons each layer still has, in their order in the weights.

    Raises:
        InputError: a layer's width disagrees with the record in its config (changed outside prunehead).
    """
    sites = ffn_sites(model) if sites is None else sites
    pruned = pruned_ffn_of(model)
    kept = []
    for site in sites:
        ids = [i for i in range(site.intermediate_size) if i not in pruned.get(site.layer, ())]
        if site.intermediate.out_features != len(ids) or site.output.in_features != len(ids):
            raise InputError(f"layer {site.layer} has {site.intermediate.out_features} FFN neurons but its config "
                             f"records {len(ids)}; prune FFN neurons only with prunehead.prune_ffn_")
        kept.append(ids)
    return kept


def ffn_plan_of(model: nn.Module, plan: PruningPlan) -> PruningPlan:
    """`plan` with the neurons already removed from `model` as its `pruned_ffn`."""
    pruned = {l: tuple(ids) for l, ids in pruned_ffn_of(model).items() if ids}
    size = ffn_sites(model)[0].intermediate_size if pruned else 0
    return PruningPlan(plan.num_layers, plan.num_heads, plan.pruned_heads, pruned, size)


@contextlib.contextmanager
def neuron_gating(model: nn.Module, gate: torch.Tensor) -> Iterator[None]:
    """Inside the block every layer's FFN activations are multiplied by `gate`, on the original neuron grid.

    `gate` is (L, I) or per sample (B, L, I); a pruned model reads the entries of the neurons it still has.
    A forward pre-hook on each output projection scales its input (B, T, I_l); gradients flow to `gate`.
    The hooks are removed on exit, also when the forward raises.
    """
    sites = ffn_sites(model)
    L, I = len(sites), sites[0].intermediate_size
    if tuple(gate.shape[-2:]) != (L, I) or gate.dim() not in (2, 3):
        raise InputError(f"the neuron gate must be (L, I) = ({L}, {I}) or (B, {L}, {I}), got {tuple(gate.shape)}")
    kept = kept_neurons(model, sites)
    handles = []
    try:
        for site, ids in zip(sites, kept):
            index = torch.tensor(ids, dtype=torch.long, device=gate.device)
            handles.append(site.output.register_forward_pre_hook(_scale(gate[..., site.layer, :], index)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scale(row: torch.Tensor, index: torch.Tensor):
    """A pre-hook multiplying the activations (B, T, I_l) by the kept entries of `row` ((I,) or (B, I))."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        (x, *rest) = args
        g = row.index_select(-1, index).to(x.device, x.dtype)  # (I_l,) or (B, I_l)
        if g.dim() == 2:
            g = g.reshape(g.shape[0], *([1] * (x.dim() - 2)), g.shape[1])  # (B, 1, I_l)
        return (x * g, *rest)

    return hook


def prune_ffn_(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Remove the FFN neurons of `plan` (original ids) from `model` in place; neurons already gone are skipped.

    Slices the rows of each intermediate projection and the matching columns of its output projection
    with torch-pruning's channel pruners (`tp.prune_linear_out_channels` / `tp.prune_linear_in_channels`).
    Heads are not touched (`units.heads.prune_heads_` removes them; `prunehead.prune_` removes every kind).
    """
    sites = ffn_sites(model)
    if plan.pruned_ffn and (plan.num_layers, plan.intermediate_size) != (len(sites), sites[0].intermediate_size):
        raise InputError(f"the plan removes neurons of {plan.num_layers} layers x {plan.intermediate_size} but the "
                         f"model has {len(sites)} x {sites[0].intermediate_size}; make the plan for this model")
    for site, kept in zip(sites, kept_neurons(model, sites)):
        remove = set(plan.pruned_ffn.get(site.layer, ()))
        positions = [p for p, i in enumerate(kept) if i in remove]
        if positions:
            _slice_(site, positions)
    merged = {l: sorted(set(ids) | set(plan.pruned_ffn.get(l, ()))) for l, ids in pruned_ffn_of(model).items()}
    merged.update({l: sorted(ids) for l, ids in plan.pruned_ffn.items() if l not in merged})
    setattr(model.config, PRUNED_FFN_KEY, {str(l): ids for l, ids in sorted(merged.items()) if ids})
    return model


def _slice_(site: FFNSite, positions: list[int]) -> None:
    """Drop the neurons at `positions` (current order): intermediate rows (+ bias), output columns."""
    flags = [p.requires_grad for m in (site.intermediate, site.output) for p in m.parameters()]
    tp.prune_linear_out_channels(site.intermediate, positions)  # weight (I, D) -> (I - k, D), bias (I - k,)
    tp.prune_linear_in_channels(site.output, positions)  # weight (D, I) -> (D, I - k)
    params = [p for m in (site.intermediate, site.output) for p in m.parameters()]
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)  # torch-pruning's new Parameters always require grad

