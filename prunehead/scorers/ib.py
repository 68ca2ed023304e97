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


def pearson_valid(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two (R, H, L, L) maps over each sample's valid L_v x L_v block.

    Padded rows and columns are cropped before correlating (method.md §1.8: padded zeros would inflate
    the correlation). A constant map gives 0. Computed in float64. Returns (R, H).
    """
    m = valid_block(valid).to(torch.float64)  # (R, 1, L, L)
    n = m.sum(dim=(2, 3))  # (R, 1)
    x, y = x.double() * m, y.double() * m
    xc = (x - x.sum(dim=(2, 3), keepdim=True) / n[..., None, None]) * m  # (R, H, L, L)
    yc = (y - y.sum(dim=(2, 3), keepdim=True) / n[..., None, None]) * m
    cov = (xc * yc).sum(dim=(2, 3))  # (R, H)
    norm = xc.flatten(2).norm(dim=-1) * yc.flatten(2).norm(dim=-1)  # (R, H)
    return torch.where(norm > 0, cov / norm.clamp_min(1e-300), torch.zeros_like(cov))
