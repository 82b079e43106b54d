"""Exact zeros: weights set to zero (pruning) and deltas mostly dropped (DARE-style sparse merges)."""

from __future__ import annotations

import math

from modeldelta_mcp.diagnosis.fingerprints.context import Context, finding, is_matrix, nnz, numel, sorted_roles
from modeldelta_mcp.models import Finding, ModuleDelta

# Trained float weights are exactly zero only by design; a cast's underflow zeroes a vanishing share.
# A tensor counts as pruned when at least this share of its entries turned to zero in B.
PRUNE_TENSOR_MIN_FRACTION = 0.01
# Random selection of the zeroed entries would keep their RMS |A| equal to the tensor's up to a
# standard error of ~1/sqrt(2k) (k zeroed entries, Gaussian-like weights); magnitude pruning must
# sit this many standard errors below it.
PRUNE_MAGNITUDE_Z = 5.0
# "Most delta entries exactly zero": at most half the entries of the changed tensors moved.
SPARSE_MAX_DENSITY = 0.5
# The changes are not zeroings of weights (that is pruning) when fewer than half are.
SPARSE_MAX_PRUNED_SHARE = 0.5


def _pruned(m: ModuleDelta) -> float:
    return m.forensics.n_pruned or 0.0


def detect_pruning(ctx: Context) -> Finding | None:
    pruned = [m for m in ctx.changed if _pruned(m) >= PRUNE_TENSOR_MIN_FRACTION * max(1.0, numel(m))]
    if not pruned:
        return None
    k = sum(_pruned(m) for m in pruned)
    entries = sum(numel(m) for m in pruned)
    fraction = k / entries
    ms_pruned = sum(_pruned(m) * (m.forensics.rms_a_pruned or 0.0) ** 2 for m in pruned) / k
    ms_all = sum((m.forensics.norm_a or 0.0) ** 2 for m in pruned) / entries
    ratio = math.sqrt(ms_pruned / ms_all) if ms_all > 0 else 1.0
    limit = 1.0 - PRUNE_MAGNITUDE_Z / math.sqrt(2 * k)
    if ratio >= limit:
        return None
    return finding(
        "pruning", "notable", "Magnitude pruning",
        f"{fraction:.1%} of the entries of {len(pruned)} tensors were set to exactly zero in B, and the zeroed "
        f"entries were A's small ones (their RMS is {ratio:.2f}× the tensors' RMS; a random choice gives 1.00).",
        {"fraction": fraction, "n_zeroed": int(k), "n_tensors": len(pruned), "magnitude_ratio": ratio,
         "roles": sorted_roles(pruned)},
        metric_value=fraction,
    )


def detect_sparse_delta(ctx: Context) -> Finding | None:
    if not ctx.changed:
        return None
    entries = sum(numel(m) for m in ctx.changed)
    moved = sum(nnz(m) for m in ctx.changed)
    density = moved / max(1.0, entries)
    if density > SPARSE_MAX_DENSITY or sum(_pruned(m) for m in ctx.changed) >= SPARSE_MAX_PRUNED_SHARE * moved:
        return None
    mats = [m for m in ctx.changed if is_matrix(m) and (m.forensics.pairs_active or 0.0) > 0]
    act_entries = sum(m.forensics.active_entries or 0.0 for m in mats)
    act_moved = sum(nnz(m) for m in mats)
    pairs = sum(m.forensics.pairs_active or 0.0 for m in mats)
    if act_entries <= 0 or pairs <= 0:
        return None
    density_active = act_moved / act_entries
    z = 1.0 - density_active
    pair_rate = sum(m.forensics.zero_pairs_active or 0.0 for m in mats) / pairs
    # i.i.d. drops: P(two neighbours both unchanged) = P(unchanged)², ratio 1; runs or masks of
    # structure push it toward 1/P(unchanged). The geometric midpoint splits the two.
    ratio = pair_rate / (z * z) if z > 0 else math.inf
    if density_active > SPARSE_MAX_DENSITY or ratio > math.sqrt(1.0 / z):
        return None
    return finding(
        "sparse_delta", "notable", "Sparse delta (DARE-style drop and rescale)",
        f"Only {density:.1%} of the entries of the {len(ctx.changed)} changed tensors moved; inside the rows that "
        f"changed the kept entries ({density_active:.1%}) are scattered independently (neighbour-pair ratio "
        f"{ratio:.2f}, 1 for i.i.d. drops), as DARE leaves a delta. DARE rescales the survivors by 1/density "
        f"(≈ {1 / density_active:.1f}×) to keep the expected delta; A and B alone cannot show the pre-drop delta.",
        {"density": density, "density_active_rows": density_active, "rescale": 1.0 / density_active,
         "rescale_basis": "implied: 1/density of the changed rows (DARE keeps the expected delta)",
         "pair_ratio": ratio, "n_tensors": len(ctx.changed), "roles": sorted_roles(ctx.changed)},
        metric_value=density,
    )
