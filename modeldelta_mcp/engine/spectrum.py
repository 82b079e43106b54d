"""Singular values of a delta from its Gram matrix: exact, streamed, and cheap.

σ² are the eigenvalues of the smaller Gram ΔᵀΔ (or ΔΔᵀ). The Gram is accumulated in float64
over row (or column) chunks, so memory is min(m, n)² and not the tensor: a float32 Gram squares
the condition number and would bury the tail of an exactly low-rank delta in rounding noise
(σ_tail ≈ sqrt(eps32)·σ1 ≈ 3e-4·σ1), inflating its effective rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Seed definitions: normalised σ below this are dropped from the entropy; log-σ fit uses σ above it.
ENTROPY_FLOOR = 1e-12
# Guards Σσ² against zero in the seed's concentration ratio.
ENERGY_EPS = 1e-12


class GramAccumulator:
    """Accumulates ΔᵀΔ over row chunks (tall) or ΔΔᵀ over column chunks (wide)."""

    def __init__(self, size: int, transpose: bool, device: torch.device) -> None:
        self.size = size
        self.transpose = transpose  # True: Gram of rows (ΔΔᵀ), fed column blocks
        self.gram = torch.zeros(size, size, dtype=torch.float64, device=device)

    def add(self, block: torch.Tensor) -> None:
        d = block.to(device=self.gram.device, dtype=torch.float64)
        if self.transpose:
            self.gram.addmm_(d, d.T)
        else:
            self.gram.addmm_(d.T, d)

    def singular_values(self) -> torch.Tensor:
        """All singular values, descending, float64 on the CPU."""
        evals = torch.linalg.eigvalsh(self.gram)
        self.gram = torch.empty(0)
        return evals.clamp_min_(0).sqrt_().flip(0).cpu()


@dataclass
class SpectrumStats:
    effective_rank: float
    stable_rank: float
    concentration_top_k: float
    top_k: int
    top_singular_values: list[float]
    spectral_alpha: float | None
    n_singular_values: int


def effective_rank(sigma: torch.Tensor) -> float:
    total = float(sigma.sum())
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > ENTROPY_FLOOR]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def spectral_alpha(sigma: torch.Tensor) -> float | None:
    """−slope of log σ against log rank (least squares), the seed's spectral decay."""
    s = sigma[sigma > ENTROPY_FLOOR].double()
    if s.numel() <= 2:
        return None
    x = torch.log(torch.arange(1, s.numel() + 1, dtype=torch.float64))
    y = torch.log(s)
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return -slope


def summarize(sigma: torch.Tensor, top_k: int) -> SpectrumStats:
    sigma = sigma.double()
    k = min(top_k, sigma.numel())
    sq = sigma * sigma
    total = float(sq.sum())
    s1 = float(sigma[0]) if sigma.numel() else 0.0
    stable = total / (s1 * s1) if s1 > 0 else 0.0
    alpha = spectral_alpha(sigma)
    return SpectrumStats(
        effective_rank=effective_rank(sigma),
        stable_rank=stable,
        concentration_top_k=float(sq[:k].sum()) / (total + ENERGY_EPS),
        top_k=k,
        top_singular_values=[float(v) for v in sigma[:k]],
        spectral_alpha=alpha if alpha is None or math.isfinite(alpha) else None,
        n_singular_values=int(sigma.numel()),
    )
