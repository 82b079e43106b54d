"""Rank of a low-rank update that was pruned afterwards, read on the entries pruning kept.

B = mask ⊙ (A + ΔW): on the entries B kept, B − A is ΔW exactly (up to rounding); on the pruned ones it
is −A, which makes the full delta dense and of full rank. The rank of ΔW is the smallest r for which a
rank-r matrix fits B − A on the kept entries of the sampled rows (alternating least squares; a rank-r
matrix is identified when every column keeps more than r of the sampled rows). Runs only on tensors
with new zeros and changes beyond them (the engine's cheap flag), on the quantizer's row sample.
"""

from __future__ import annotations

import numpy as np

# Largest rank tried: LoRA ranks merged into weights (4..64) above this are not told from dense updates on
# a 32-row sample (a rank-r fit needs > r kept rows per column).
MAX_RANK = 12
# ALS sweeps per rank: exact low-rank data converges in a few; the rest is margin.
SWEEPS = 30
# A fit explains the kept entries when the residual RMS is below this share of the delta's RMS plus the
# rounding of the stored values (a dense update leaves a residual of the order of the delta itself).
FIT_SHARE = 1e-3
ROUNDING_MARGIN = 4.0
# Ridge on the normal equations (relative), for columns whose kept rows barely determine them.
RIDGE = 1e-9


def masked_rank(d: np.ndarray, kept: np.ndarray, unit: float, rms_b: float) -> int | None:
    """Smallest rank fitting d on the kept entries, None when none up to MAX_RANK does."""
    rows, cols = d.shape
    obs = kept.astype(np.float64)
    x = np.where(kept, d, 0.0).astype(np.float64)
    n_obs = obs.sum()
    if n_obs == 0:
        return None
    scale = float(np.sqrt((x * x).sum() / n_obs))
    if scale == 0.0:
        return 0
    tol = FIT_SHARE * scale + ROUNDING_MARGIN * unit * rms_b
    if float(obs.sum(axis=0).min()) <= 1:
        return None
    u0, _, _ = np.linalg.svd(x / max(obs.mean(), 1e-12), full_matrices=False)
    for r in range(1, min(MAX_RANK, rows - 1, cols - 1) + 1):
        if float(obs.sum(axis=0).min()) <= r:
            return None
        u = u0[:, :r].copy()
        try:
            for _ in range(SWEEPS):
                v = _solve(u, x, obs)  # cols × r
                u = _solve(v, x.T, obs.T)  # rows × r
        except np.linalg.LinAlgError:  # a row or column the kept entries do not determine
            return None
        resid = (u @ v.T - x) * obs
        if float(np.sqrt((resid * resid).sum() / n_obs)) <= tol:
            return r
    return None


def _solve(f: np.ndarray, x: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Per column j: least squares of x[:, j] ≈ f @ g_j over the observed rows."""
    r = f.shape[1]
    # normal equations for all columns at once: (fᵀ diag(obs_j) f) g_j = fᵀ (obs_j ⊙ x_j)
    gram = np.einsum("ik,il,ij->jkl", f, f, obs)
    rhs = np.einsum("ik,ij->jk", f, obs * x)
    ridge = RIDGE * np.trace(gram, axis1=1, axis2=2) / r + np.finfo(np.float64).tiny
    gram += ridge[:, None, None] * np.eye(r)
    return np.linalg.solve(gram, rhs[..., None])[..., 0]
