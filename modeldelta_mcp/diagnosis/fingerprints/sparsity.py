"""Exact zeros: weights set to zero (pruning) and deltas mostly dropped (DARE-style sparse merges)."""

from __future__ import annotations

import math
from collections import Counter

from modeldelta_mcp.diagnosis.fingerprints.context import (
    ATTN_ROLES,
    Context,
    finding,
    is_matrix,
    nnz,
    numel,
    shape2d,
    sorted_roles,
)
from modeldelta_mcp.models import Finding, ModuleDelta

# Trained float weights are exactly zero only by design; a cast's underflow zeroes a vanishing share.
# A tensor counts as pruned when at least this share of its entries turned to zero in B.
PRUNE_TENSOR_MIN_FRACTION = 0.01
# Random selection of the zeroed entries would keep their RMS |A| equal to the tensor's up to a
# standard error of ~1/sqrt(2k) (k zeroed entries, Gaussian-like weights); magnitude pruning must
# sit this many standard errors below it.
PRUNE_MAGNITUDE_Z = 5.0
# N:M pruning leaves at least N zeros in every group of M along the input dim; magnitude pruning at
# 50% does so in ~69% of groups of 4 (i.i.d. zeros), so nearly all groups mark the semi-structured kind.
NM_MIN_SHARE = 0.99
# Structured pruning: nearly all new zeros lie in whole zero rows (or columns).
STRUCTURED_MIN_SHARE = 0.9
# Attention heads are runs of head_dim >= 8 rows (q/k/v) or columns (o).
HEAD_MIN_RUN = 8
# "Most delta entries exactly zero": at most half the entries of the changed tensors moved.
SPARSE_MAX_DENSITY = 0.5
# The changes are not zeroings of weights (that is pruning) when fewer than half are.
SPARSE_MAX_PRUNED_SHARE = 0.5


def _pruned(m: ModuleDelta) -> float:
    return m.forensics.n_pruned or 0.0


def pruning_pattern(m: ModuleDelta) -> str:
    """Where a tensor's new zeros sit: N:M groups along the input dim, whole rows/columns/heads, or none."""
    f, k = m.forensics, _pruned(m)
    rows, cols = shape2d(m)
    if k <= 0:
        return "unstructured"
    if (f.nm_2_4_share or 0.0) >= NM_MIN_SHARE:
        return "2:4"
    if (f.nm_4_8_share or 0.0) >= NM_MIN_SHARE:
        return "4:8"
    for axis, count, runs, length in (("rows", f.zero_rows_b, f.zero_row_runs, cols),
                                      ("columns", f.zero_cols_b, f.zero_col_runs, rows)):
        if count and count * length >= STRUCTURED_MIN_SHARE * k:
            if m.role in ATTN_ROLES and runs and count / runs >= HEAD_MIN_RUN:
                return "heads"
            return axis
    return "unstructured"


def detect_pruning(ctx: Context, exclude: frozenset[str] = frozenset()) -> Finding | None:
    """`exclude`: tensors whose zeros another step explains (a quantizer's zero level)."""
    pruned = [m for m in ctx.changed if m.name not in exclude
              and _pruned(m) >= PRUNE_TENSOR_MIN_FRACTION * max(1.0, numel(m))]
    if not pruned:
        return None
    k = sum(_pruned(m) for m in pruned)
    entries = sum(numel(m) for m in pruned)
    fraction = k / entries
    ms_pruned = sum(_pruned(m) * (m.forensics.rms_a_pruned or 0.0) ** 2 for m in pruned) / k
    ms_all = sum((m.forensics.norm_a or 0.0) ** 2 for m in pruned) / entries
    ratio = math.sqrt(ms_pruned / ms_all) if ms_all > 0 else 1.0
    limit = 1.0 - PRUNE_MAGNITUDE_Z / math.sqrt(2 * k)
    by_entries: Counter[str] = Counter()
    tensors: Counter[str] = Counter()
    for m in pruned:
        pat = pruning_pattern(m)
        by_entries[pat] += int(_pruned(m))
        tensors[pat] += 1
    pattern = by_entries.most_common(1)[0][0]
    # trained weights never zero whole rows or N:M groups by chance: a structure is evidence by itself
    if ratio >= limit and pattern == "unstructured":
        return None
    what = {"unstructured": "Magnitude pruning", "2:4": "2:4 semi-structured pruning",
            "4:8": "4:8 semi-structured pruning", "rows": "Structured pruning (rows)",
            "columns": "Structured pruning (columns)", "heads": "Structured pruning (attention heads)"}[pattern]
    return finding(
        "pruning", "notable", what,
        f"{fraction:.1%} of the entries of {len(pruned)} tensors were set to exactly zero in B ({pattern}), and the "
        f"zeroed entries were A's small ones (their RMS is {ratio:.2f}× the tensors' RMS; a random choice gives 1.00).",
        {"fraction": fraction, "n_zeroed": int(k), "n_tensors": len(pruned), "magnitude_ratio": ratio,
         "roles": sorted_roles(pruned), "pattern": pattern, "patterns": dict(tensors),
         "tensors": [m.name for m in pruned]},
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
