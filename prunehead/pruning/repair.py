"""Training-free repair of a pruned model: refit the projection that read the removed units.

Attention heads and FFN neurons end in one linear map: the output projection y = W x + b reads the heads'
outputs (or the neurons' activations) x. Removing units drops columns of W. On calibration samples of
the *unpruned* model (its inputs x of every such projection, N tokens):

* `bias` (FLAP, An et al. 2024): fold the removed columns' mean contribution into the bias,
  b' = b + W[:, R] mean(x_R): the exact optimum of the error's mean. Cost: one forward over the samples.
* `lsq` (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers", mask tuning by
  least squares; here every kept column and the bias are refit): min over W', b' of
  sum_tokens ||W' x_K + b' - (W x + b)||^2, solved from the Gram matrix G = [x, 1]^T [x, 1] (accumulated
  in float64 over the samples) as G_KK [W'; b']^T = G_K: [W; b]^T. Cost: one forward plus one
  (|K| + 1)-square solve per projection.

Conv channels are not repaired: their consumers are convolutions without bias in wav2vec2 base, and a
LayerNorm over the channels renormalizes the rest, so no exact fold exists. The error a repair leaves is
reported per projection: tr(D^T G D) / N, D the difference between the full and the refit [W; b]
(zero-padded at the removed columns), relative to the outputs' variance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..heads import head_adapter
from ..units.depth import original_layer_ids
from ..scorers.tools import forward
from ..units.ffn import ffn_sites, kept_neurons

METHODS = ("bias", "lsq")
RIDGE = 1e-8  # x mean diagonal of G: keeps the solve defined when calibration tokens are collinear


@dataclass
class Site:
    """One output projection: its kind ("heads", "ffn"), layer, column of each original unit, and the
    calibration statistics of its input x (n features): Gram [x, 1]^T [x, 1] ((n + 1)^2) and token count."""

    kind: str
    layer: int
    columns: dict[int, list[int]]  # original unit id -> columns of x it owns (in the unpruned model)
    gram: torch.Tensor  # (n + 1, n + 1) float64
    tokens: int = 0


def _projections(model: nn.Module) -> list[tuple[str, int, nn.Module, dict[int, list[int]]]]:
    """(kind, layer, output projection, {unit: its input columns}) of every head block and FFN block; layers by
    their original ids, so a model that lost whole layers pairs with the unpruned one."""
    adapter, ids = head_adapter(model), original_layer_ids(model)
    out = []
    for site, kept in zip(adapter.sites, adapter.kept_heads(model)):
        d = adapter.head_dim
        out.append(("heads", ids[site.layer], site.out,
                    {h: list(range(p * d, (p + 1) * d)) for p, h in enumerate(kept)}))
    for site, kept in zip(ffn_sites(model), kept_neurons(model)):
        out.append(("ffn", ids[site.layer], site.output, {i: [p] for p, i in enumerate(kept)}))
    return out


@contextlib.contextmanager
def _recording(model: nn.Module, sites: list[Site]) -> Iterator[None]:
    """Accumulate every projection's input Gram matrix while the block runs forwards."""
    handles = []
    for (_, _, linear, _), site in zip(_projections(model), sites):
        def hook(module: nn.Module, args: tuple, site: Site = site) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (tokens, n)
            ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
            a = torch.cat([x, ones], dim=1)  # (tokens, n + 1)
            site.gram += (a.T @ a).cpu()
            site.tokens += x.shape[0]
        if isinstance(linear, nn.Linear):
            handles.append(linear.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def calibrate(model: nn.Module, batches: list[Any]) -> list[Site]:
    """The calibration statistics of `model` (the unpruned one) on `batches`. Cost: one forward per batch."""
    sites = []
    for kind, layer, linear, columns in _projections(model):
        n = linear.in_features if isinstance(linear, nn.Linear) else 0
        sites.append(Site(kind, layer, columns, torch.zeros(n + 1, n + 1, dtype=torch.float64)))
    with torch.no_grad(), _recording(model, sites):
        for batch in batches:
            forward(model, batch)  # the model's inputs of the batch, on its device
    return sites


def repair_(pruned: nn.Module, unpruned: nn.Module, sites: list[Site], method: str) -> dict[str, Any]:
    """Refit, in place, every output projection of `pruned` that lost units (`calibrate(unpruned, ...)`
    gave `sites`); returns the report: per projection the relative calibration error before and after."""
    if method not in METHODS:
        raise InputError(f"--repair must be one of {', '.join(METHODS)}, got {method!r}")
    full = {(kind, layer): linear for kind, layer, linear, _ in _projections(unpruned)}
    calibrated = {(site.kind, site.layer): site for site in sites}
    rows = []
    for kind, layer, linear, kept in _projections(pruned):  # a removed layer has nothing to refit
        site = calibrated[(kind, layer)]
        if set(kept) == set(site.columns) or site.tokens == 0:
            continue  # nothing removed here (or an emptied block in the unpruned model)
        wb = _weight_and_bias(full[(kind, layer)])  # (n + 1, D): [W^T; b]
        has_bias = getattr(linear, "bias", None) is not None
        if not has_bias and method == "bias":
            continue  # no bias to fold the removed units' mean into
        keep = [c for unit in kept for c in site.columns[unit]] + ([wb.shape[0] - 1] if has_bias else [])
        fitted = _fit(site, wb, keep, method)  # (|K| (+ 1), D)
        error = [_error(site, wb, _padded(wb, keep, w)) for w in (wb[keep], fitted)]  # the plain cut, the repair
        if error[1] <= error[0]:  # never worse than the cut (an exact cut stays as it is)
            _write_(linear, fitted, has_bias)
        rows.append({"units": kind, "layer": layer, "error_before": error[0], "error_after": min(error)})
    return {"method": method, "projections": rows}


def _weight_and_bias(linear: nn.Module) -> torch.Tensor:
    """[W^T; b] ((n + 1), D) of a linear map in float64 (b = 0 when it has none)."""
    weight = linear.weight.detach().double().cpu()  # (D, n)
    bias = linear.bias.detach().double().cpu() if linear.bias is not None else torch.zeros(weight.shape[0])
    return torch.cat([weight.T, bias.double()[None, :]], dim=0)


def _padded(wb: torch.Tensor, keep: list[int], rows: torch.Tensor) -> torch.Tensor:
    """`rows` (for the `keep` rows) on the full (n + 1, D) grid, zeros at the removed rows."""
    out = torch.zeros_like(wb)
    out[keep] = rows
    return out


def _fit(site: Site, wb: torch.Tensor, keep: list[int], method: str) -> torch.Tensor:
    """The repaired rows of [W^T; b] for the kept columns (and the bias row last)."""
    g = site.gram
    if method == "bias":
        removed = [i for i in range(wb.shape[0] - 1) if i not in set(keep)]
        mean = g[-1, :-1] / site.tokens  # (n,) the inputs' mean
        rows = wb[keep].clone()
        rows[-1] += mean[removed] @ wb[removed]  # b' = b + W_R mean(x_R)
        return rows
    gk = g[keep][:, keep]  # (|K| + 1, |K| + 1)
    ridge = RIDGE * gk.diagonal().mean().clamp_min(1e-30)
    rhs = g[keep] @ wb  # (|K| + 1, D): [x_K, 1]^T (x W^T + b)
    return torch.linalg.solve(gk + ridge * torch.eye(len(keep), dtype=gk.dtype), rhs)


def _error(site: Site, wb: torch.Tensor, fitted: torch.Tensor) -> float:
    """Mean squared output error of `fitted` against the full map on the calibration tokens, relative to the
    outputs' variance (0: exact, 1: as bad as predicting the mean output)."""
    g, n = site.gram, site.tokens
    d = wb - fitted
    error = torch.trace(d.T @ g @ d) / n
    mean = (g[-1] @ wb) / n  # (D,) mean output
    variance = torch.trace(wb.T @ g @ wb) / n - mean @ mean
    return float(error / variance.clamp_min(1e-30))


def _write_(linear: nn.Module, rows: torch.Tensor, has_bias: bool) -> None:
    """Write repaired [W'^T; b'] (b' only `has_bias`) into the pruned model's projection (a bias-only block:
    its bias alone)."""
    weight = (rows[:-1] if has_bias else rows).T  # (D, |K|)
    with torch.no_grad():
        if getattr(linear, "weight", None) is not None and linear.weight.numel():
            linear.weight.copy_(weight.to(linear.weight.dtype))
        if has_bias:
            linear.bias.copy_(rows[-1].to(linear.bias.dtype))
