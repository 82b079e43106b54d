"""Rank of a low-rank update whose rows were rescaled afterwards (a DoRA merge), read on sampled rows.

PEFT's DoRA merge (peft/tuners/lora/variants.py, DoraLinearVariant) writes B = diag(f)·(A + s·U·V) with
f = magnitude / ‖A + s·U·V‖, the norm taken per output channel (over the inputs of a Linear weight, over
all but the first axis of a Conv weight): f scales the rows of the engine's 2-D view. Hence
Δ = B − A = diag(f − 1)·A + diag(f)·s·U·V, a row rescaling of A plus a rank-r term, numerically full rank.
The rescaled rank is the smallest r for which Δ − diag(c)·A has rank r for some per-row c that is needed
(c = 0 is a plain LoRA merge, whose Δ the full spectrum already reads as low rank).

On the k sampled rows (A_s, Δ_s), with Q an orthonormal basis of A_s's row space: Δ_s = G·Qᵀ + R, R ⊥ A_s.
The rescaling lives inside A_s's row space, so R carries only the rank-r term (diag(f)·s·U_s·V projected
off A_s, of rank r when n > k + r). The test reads R's rank from its singular values (above the rounding
floor, at a cliff), then checks that the rest is a rescaling: with P the projector off R's column space,
P·(G − diag(c)·T) ≈ 0 (T = A_s·Q) for the least-squares c. Everything comes from one Gram of the stacked
[A_s; Δ_s] (2k × n, float64) and k × k algebra: no iteration. A trained dense update leaves R of full
rank, which a Gram of the first SCREEN_COLS columns already shows (any column subset keeps the rank-r
structure), so a full fine-tune pays only that. The algebra is torch's in float64, on the calling reader
lane's one thread (numpy's BLAS would start a thread per core in every lane, which spin against the engine's
Gram products: 11 s → 17 s on the 0.5B benchmark pair).

Not covered: PEFT's DoRA for embeddings and for fan-in-fan-out layers (GPT-2's Conv1D) scales columns of
the stored weight, which a row sample cannot test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from modeldelta_mcp.numerics import LOW_RANK_MAX_FRACTION, RANK_FLOOR_MARGIN, UNIT_ROUNDOFF, UNRESOLVED_MARGIN

# Rows sampled for the test (the first rows of the tensor): ranks up to half of them are identified, so
# LoRA ranks 8..32 (PEFT's default 8, the DoRA paper's 16 and 32) are read; rank 64 and up are not.
SAMPLE_ROWS = 64
# A rank-r fit of k rows is evidence only when rows outnumber the rank well: r <= LOW_RANK_MAX_FRACTION of
# the rows (the LoRA rule on whole matrices), counted over the rows that changed beyond a rescale of
# themselves (rows of an embedding that only weight decay touched are a rescale, not evidence). Fewer
# rows than this prove nothing.
MIN_ROWS = 8
# Columns of the screen: 4 × the rows leaves R (k × (n − k)) room for its full rank, and costs a fraction of
# the full Gram on wide matrices (0.25 ms against 0.7 ms at 896 columns and 4 ms at 4864, one thread).
SCREEN_COLS = 4 * SAMPLE_ROWS
# The last singular value of the rank-r term must stand this far above the next: the σ of a trained dense
# update, and of rounding noise, fall smoothly (adjacent σ within a few % of each other), while a rank-r
# term whose last σ clears the floor stands >= 1.75× above the rounding bulk (numerics.RANK_FLOOR_MARGIN:
# the floor is ≈ 3.5× the MP edge of one rounding, ≈ 1.75× that of a bf16 rounding counted with u = 2^-9).
# Measured: at 1.2 a rank-32 DoRA saved in bf16 read 31 on one matrix, and a fine-tune's LM head 5; at
# 1.5 neither.
MIN_CLIFF = 1.5
# Ridge on the rescale's normal equations (relative), for rows R's column space nearly contains.
RIDGE = 1e-12
_EPS = UNIT_ROUNDOFF["float64"]


@dataclass(frozen=True)
class _Split:
    """Δ_s split along A_s's row space, from the Gram of [A_s; Δ_s]."""

    t: torch.Tensor  # A_s·Q (lower triangular: the Cholesky factor of A_s·A_sᵀ)
    g: torch.Tensor  # Δ_s·Q
    off: torch.Tensor  # R·Rᵀ, R = Δ_s off A_s's row space
    sigma: list[float]  # σ(R), descending
    floor: float  # σ above it are signal (storage rounding of a k × n matrix, or the Gram's resolution)
    edge: float  # the rounding bulk lies below it
    resolved: float  # the Gram's resolution of σ
    active: int  # rows that changed beyond a rescale of themselves


def _split(a: torch.Tensor, d: torch.Tensor, unit: float, rms_b: float) -> _Split | None:
    k, cols = a.shape
    stacked = torch.cat([a, d])
    gram = stacked @ stacked.T
    g_aa, g_da, g_dd = gram[:k, :k], gram[k:, :k], gram[k:, k:]
    lower, info = torch.linalg.cholesky_ex(g_aa)  # A_s = L·Qᵀ
    if int(info) != 0:  # A's sampled rows are dependent (zero rows): no basis to rescale against
        return None
    g = torch.linalg.solve_triangular(lower, g_da.T, upper=False).T  # Δ_s·Q = G_DA·L⁻ᵀ
    off = g_dd - g @ g.T
    sigma = torch.linalg.eigvalsh(off).flip(0).clamp_min(0.0).sqrt().tolist()
    # as the engine's sv_floor: the storage rounding of a k × n matrix (RANK_FLOOR_MARGIN × u·rms(B)·(√k + √n)),
    # or what the float64 Gram resolves below ‖Δ_s‖ (the subtraction above cancels Δ_s's part inside A_s)
    rounding = unit * rms_b * (math.sqrt(k) + math.sqrt(cols))
    resolved = math.sqrt(UNRESOLVED_MARGIN * _EPS * float(torch.trace(g_dd)))
    # rows beyond a rescale of themselves: ‖Δ_i‖² − ⟨Δ_i, A_i⟩² / ‖A_i‖² above the same floor for one row
    own = (torch.diag(g_dd) - torch.diag(g_da) ** 2 / torch.diag(g_aa)).clamp_min(0.0).sqrt()
    row_floor = (UNRESOLVED_MARGIN * _EPS * torch.diag(g_dd)).sqrt().clamp_min(
        RANK_FLOOR_MARGIN * unit * rms_b * math.sqrt(cols))
    return _Split(lower, g, off, sigma, max(RANK_FLOOR_MARGIN * rounding, resolved), max(rounding, resolved),
                  resolved, int((own > row_floor).sum()))


def rescaled_rank(a: torch.Tensor, d: torch.Tensor, unit: float, rms_b: float) -> int | None:
    """Smallest r with d − diag(c)·a of rank r (rows: a tensor's first rows, float64), None when none fits or
    when c is not needed (d itself has rank r: a plain low-rank update).

    `unit` is the unit roundoff of B's storage grid and `rms_b` B's RMS: they set the rounding floor."""
    rows, cols = a.shape
    k = min(rows, SAMPLE_ROWS, cols // 2)  # n >= 2k: R has room off A_s's row space
    if k < MIN_ROWS:
        return None
    a, d = a[:k], d[:k]
    most = int(LOW_RANK_MAX_FRACTION * k)
    if cols > SCREEN_COLS:
        screen = _split(a[:, :SCREEN_COLS], d[:, :SCREEN_COLS], unit, rms_b)
        # more σ above the floor than a rank-r term can make: full rank (a fine-tune stops here)
        if screen is None or sum(s > screen.floor for s in screen.sigma) > most:
            return None
    split = _split(a, d, unit, rms_b)
    if split is None:
        return None
    sigma = split.sigma
    rank = _cliff(sigma, sum(s > split.floor for s in sigma), split.edge,
                  int(LOW_RANK_MAX_FRACTION * split.active))
    if rank is None:
        return None
    # the part inside A_s's row space must be a rescaling of A_s's rows plus the same rank-r column space
    lam, vecs = torch.linalg.eigh(split.off)
    u = vecs[:, torch.argsort(lam, descending=True)[:rank]]
    proj = torch.eye(k, dtype=torch.float64) - u @ u.T
    t, g = split.t, split.g
    normal = proj * (t @ t.T)  # Hadamard: ⟨P·e_i·t_i, P·e_j·t_j⟩
    rhs = torch.einsum("ij,jl,il->i", proj, g, t)  # diag(P·G·Tᵀ)
    normal += torch.eye(k, dtype=torch.float64) * (RIDGE * float(torch.trace(normal)) / k)
    solved, info = torch.linalg.solve_ex(normal, rhs)
    if int(info) != 0:
        return None
    c = solved
    # what the rescale leaves there must sit below the rank-r term by the same cliff (the merge's own
    # arithmetic rounds values inside A_s's row space too: measured up to 4× the storage rounding's edge)
    resid = float(torch.linalg.matrix_norm(proj @ (g - c[:, None] * t), ord=2))
    if MIN_CLIFF * resid > sigma[rank - 1]:
        return None
    # and the rescale must be needed: above the storage floor of a k × k matrix, and explaining the part
    # inside by the same cliff (without it, c = 0: a plain low-rank update, which sv_rank reads)
    plain = float(torch.linalg.matrix_norm(proj @ g, ord=2))
    if plain <= max(RANK_FLOOR_MARGIN * unit * rms_b * 2 * math.sqrt(k), split.resolved, MIN_CLIFF * resid):
        return None
    return rank


def _cliff(sigma: list[float], above: int, edge: float, most: int) -> int | None:
    """The rank: the first cliff (σ_r ≥ MIN_CLIFF·σ_(r+1)) from the σ above the floor on, among σ above `edge`.

    σ above the floor are signal; in half precision the last σ of a rank-r term can sink below the floor
    (which bounds rounding from above) while still standing a cliff above the rounding bulk, so the search
    goes on down to the rounding edge (floor / RANK_FLOOR_MARGIN)."""
    for r in range(max(1, above), min(most, len(sigma) - 1) + 1):
        if sigma[r - 1] <= edge:
            return None
        if sigma[r - 1] >= MIN_CLIFF * sigma[r]:
            return r
    return None
