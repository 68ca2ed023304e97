"""The HIB information-bottleneck loss and the valid-block Pearson correlation (method.md §1.4, §1.8).

Everything here is pure tensor math on attention maps; no model is involved.
"""

from __future__ import annotations

import math

import torch

IB_KINDS = ("paper", "vib_upper", "gaussian_mi")


def ib_row(t: torch.Tensor, d: int, lam: float = 0.9, kind: str = "paper") -> torch.Tensor:
    """Per-row IB term as a function of `t = ||a_i||^2` (method.md §1.4).

    `paper` is Eq. 15/16 literally (= isotropic KL / d + const; minimum at t = 1 - lam^2);
    `vib_upper` is E_V KL(P(z_i|V) || N(0, I_d)); `gaussian_mi` is the exact I(z_i; V) under the
    paper's Gaussian assumptions. The last two are d times larger than `paper`: divide beta by d to
    keep the paper's gradient scale.
    """
    if kind == "paper":
        return 0.5 * (t + lam**2 * d - d - torch.log(t + lam**2) - 2 * (d - 1) * math.log(lam))
    if kind == "vib_upper":
        return 0.5 * d * (t + lam**2 - 1 - math.log(lam**2))
    if kind == "gaussian_mi":
        return 0.5 * d * torch.log1p(t / lam**2)
    raise ValueError(f"unknown IB loss kind {kind!r}; choose one of: {', '.join(IB_KINDS)}")


def ib_sum(P: torch.Tensor, valid: torch.Tensor, heads: torch.Tensor | None, d: int, lam: float,
           kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the IB term over valid query frames and selected heads, and how many terms were summed.

    Args:
        P: (R, H, L, L) row-stochastic attention (softmax(A_r + key mask)).
        valid: (R, L) bool, True for real (non-padded) frames.
        heads: (R, H) bool, the heads whose attention is replaced; None = all heads.
    Returns:
        ((R,) sum, (R,) count); the per-sample loss is sum / count (mean over frames and heads, §4.1).
    """
    t = (P.float() ** 2).sum(-1)  # (R, H, L)
    kl = ib_row(t, d, lam, kind)  # (R, H, L)
    weight = valid[:, None, :].to(kl.dtype)  # (R, 1, L)
    if heads is not None:
        weight = weight * heads[:, :, None].to(kl.dtype)  # (R, H, L)
    weight = weight.expand_as(kl)
    return (kl * weight).sum(dim=(1, 2)), weight.sum(dim=(1, 2))


def ib_loss(P: torch.Tensor, valid: torch.Tensor, d: int, lam: float = 0.9, kind: str = "paper") -> torch.Tensor:
    """(R,) per-sample L_IB: the IB term averaged over the valid query frames and all heads of `P`."""
    total, count = ib_sum(P, valid, None, d, lam, kind)
    return total / count


def valid_block(valid: torch.Tensor) -> torch.Tensor:
    """(R, 1, L, L) bool: True where both query and key frame are valid (valid: (R, L) bool)."""
    return (valid[:, :, None] & valid[:, None, :])[:, None]


def _centred(x: torch.Tensor, m: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x (R, H, L, L) minus its mean over the block `m` (R, 1, L, L), zero outside it, scaled to max |.| = 1.

    Float32 with care: a second centring pass removes what rounding left of the mean, and the scaling
    (correlation is scale-free) keeps squares of tiny deviations away from underflow.
    """
    for _ in range(2):
        x = (x - (x * m).sum(dim=(2, 3), keepdim=True) / n) * m  # (R, H, L, L)
    peak = x.abs().amax(dim=(2, 3), keepdim=True)  # (R, H, 1, 1)
    return torch.where(peak > 0, x / peak.clamp_min(torch.finfo(x.dtype).tiny), x)


def pearson_valid(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two (R, H, L, L) maps over each sample's valid L_v x L_v block.

    Padded rows and columns are cropped before correlating (method.md §1.8: padded zeros would inflate
    the correlation). A constant map gives 0. Computed in float32 on the maps' device (no float64 there:
    MPS has none, consumer GPUs run it at 1/32-1/64 speed); tests/test_device.py bounds the difference
    from a float64 reference. Returns (R, H) float32.
    """
    m = valid_block(valid).float()  # (R, 1, L, L)
    n = m.sum(dim=(2, 3), keepdim=True)  # (R, 1, 1, 1)
    xc, yc = _centred(x.float(), m, n), _centred(y.float(), m, n)  # (R, H, L, L)
    cov = (xc * yc).sum(dim=(2, 3))  # (R, H)
    norm = (xc**2).sum(dim=(2, 3)).sqrt() * (yc**2).sum(dim=(2, 3)).sqrt()  # (R, H), >= 1 unless constant
    return torch.where(norm > 0, cov / norm.clamp_min(1.0), torch.zeros_like(cov))
