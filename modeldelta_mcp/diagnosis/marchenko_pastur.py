"""Marchenko–Pastur law: where the singular values of an i.i.d. noise matrix fall.

For an m×n matrix with i.i.d. entries of variance τ², p = min(m, n), q = max(m, n), γ = p/q, the
eigenvalues λ of XXᵀ/q (p×p) fill [τ²(1-√γ)², τ²(1+√γ)²] with the MP density, so σ = √(qλ) fills
[τ(√q-√p), τ(√q+√p)]. Quantiles are returned relative to the upper edge τ(√m+√n).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Integration points of the MP CDF (cosine substitution makes the edge square roots smooth).
_POINTS = 4096


def edge(rows: int, cols: int, tau: float) -> float:
    """Upper MP edge of σ: τ(√m + √n)."""
    return tau * (math.sqrt(rows) + math.sqrt(cols))


@lru_cache(maxsize=256)
def sigma_quantiles(rows: int, cols: int, probs: tuple[float, ...]) -> tuple[float, ...]:
    """MP quantiles of σ at `probs`, divided by the upper edge (τ = 1)."""
    p, q = min(rows, cols), max(rows, cols)
    g = p / q
    lo, hi = (1 - math.sqrt(g)) ** 2, (1 + math.sqrt(g)) ** 2
    theta = np.linspace(0.0, math.pi, _POINTS)
    lam = lo + (hi - lo) * (1 - np.cos(theta)) / 2
    # density f(λ) = sqrt((hi-λ)(λ-lo)) / (2π γ λ); dλ = (hi-lo)/2 · sin θ dθ
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = np.sqrt(np.clip((hi - lam) * (lam - lo), 0, None)) / (2 * math.pi * g * lam)
    dens = np.nan_to_num(dens) * (hi - lo) / 2 * np.sin(theta)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(theta))])
    cdf /= cdf[-1]
    lam_q = np.interp(np.asarray(probs), cdf, lam)
    edge_unit = math.sqrt(hi)  # σ/√q at the upper edge
    return tuple(float(v) for v in np.sqrt(lam_q) / edge_unit)
