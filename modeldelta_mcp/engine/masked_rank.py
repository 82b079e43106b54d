"""Rank of a low-rank update that was pruned afterwards, read on the entries pruning kept.

B = mask ⊙ (A + ΔW): on the entries B kept, B − A is ΔW exactly (up to rounding); on the pruned ones it
is −A, which makes the full delta dense and of full rank. The rank of ΔW is the smallest r for which a
rank-r matrix fits B − A on the kept entries of the sampled rows (alternating least squares; a rank-r
matrix is identified when every column keeps more than r of the sampled rows). Runs only on tensors
with new zeros and changes beyond them (the engine's cheap flag), on the quantizer's row sample. The algebra
is torch's in float64 on the calling reader lane's thread (numpy's BLAS would start a thread per core in each
lane, spinning against the engine's Gram products; see rescaled_rank.py).
"""

from __future__ import annotations

import math

import torch

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


def masked_rank(d: torch.Tensor, kept: torch.Tensor, unit: float, rms_b: float) -> int | None:
    """Smallest rank fitting d (float64) on the kept entries, None when none up to MAX_RANK does."""
    rows, cols = d.shape
    obs = kept.to(torch.float64)
    x = torch.where(kept, d, 0.0).to(torch.float64)
    n_obs = float(obs.sum())
    if n_obs == 0:
        return None
    scale = math.sqrt(float((x * x).sum()) / n_obs)
    if scale == 0.0:
        return 0
    tol = FIT_SHARE * scale + ROUNDING_MARGIN * unit * rms_b
    per_col = float(obs.sum(dim=0).min())
    if per_col <= 1:
        return None
    u0, _, _ = torch.linalg.svd(x / max(float(obs.mean()), 1e-12), full_matrices=False)
    for r in range(1, min(MAX_RANK, rows - 1, cols - 1) + 1):
        if per_col <= r:
            return None
        u, v = u0[:, :r].clone(), None
        for _ in range(SWEEPS):
            v = _solve(u, x, obs)  # cols × r
            u_next = _solve(v, x.T, obs.T) if v is not None else None  # rows × r
            if v is None or u_next is None:  # a row or column the kept entries do not determine
                return None
            u = u_next
        assert v is not None
        resid = (u @ v.T - x) * obs
        if math.sqrt(float((resid * resid).sum()) / n_obs) <= tol:
            return r
    return None


def _solve(f: torch.Tensor, x: torch.Tensor, obs: torch.Tensor) -> torch.Tensor | None:
    """Per column j: least squares of x[:, j] ≈ f @ g_j over the observed rows; None when singular."""
    r = f.shape[1]
    # normal equations for all columns at once: (fᵀ diag(obs_j) f) g_j = fᵀ (obs_j ⊙ x_j)
    gram = torch.einsum("ik,il,ij->jkl", f, f, obs)
    rhs = torch.einsum("ik,ij->jk", f, obs * x)
    ridge = RIDGE * gram.diagonal(dim1=1, dim2=2).sum(dim=1) / r + torch.finfo(torch.float64).tiny
    gram = gram + ridge[:, None, None] * torch.eye(r, dtype=torch.float64)
    solved, info = torch.linalg.solve_ex(gram, rhs[..., None])
    if bool((info != 0).any()):
        return None
    return solved[..., 0]
