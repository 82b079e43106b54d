"""Whole-model transforms: nothing changed, a different model, a float cast, a quantize round trip."""

from __future__ import annotations

import math

from modeldelta_mcp.diagnosis.fingerprints.context import (
    Context,
    finding,
    nnz,
    sorted_roles,
)
from modeldelta_mcp.models import Finding, ModuleDelta
from modeldelta_mcp.numerics import CAST_FORMATS, QUANT_GRANULARITIES, QUANT_MAX_BITS

# Permutation null of cos(vec A, vec B): shuffling B's entries gives cosines with the mean and spread
# below; |z| beyond this many null standard deviations happens by chance with p < 6e-7 per tensor.
UNRELATED_Z = 5.0
# "B is not derived from A": most of the weights (by parameters) sit inside the null. A derived model
# keeps nearly every tensor far outside it (z of hundreds); re-initialised parts stay a minority.
UNRELATED_MIN_FRACTION = 0.5
# A codebook (NF4-like) shows at most 2^k distinct values in a group; with at least this many entries
# per level a continuous distribution would have shown (nearly) every entry as distinct.
CODEBOOK_ENTRIES_PER_LEVEL = 4


def detect_identical(ctx: Context) -> Finding | None:
    mods = ctx.mods
    resized = [m for m in mods if m.rows_a is not None and m.rows_b is not None and m.rows_a != m.rows_b]
    if mods and not ctx.changed and not resized:
        return finding("identical", "info", "Identical weights",
                       f"All {len(mods)} compared tensors are bit-equal after alignment.",
                       {"n_tensors": len(mods)})
    return None


def null_z(m: ModuleDelta) -> float | None:
    """z of the observed cosine against the permutation null of B's entries."""
    f = m.forensics
    n = f.numel or 0.0
    na, nb = f.norm_a or 0.0, f.norm_b or 0.0
    if n < 2 or na <= 0 or nb <= 0 or f.sum_a is None:
        return None
    sa, sb = f.sum_a, f.sum_b or 0.0
    ssa = max(0.0, na * na - sa * sa / n)
    ssb = max(0.0, nb * nb - sb * sb / n)
    mean0 = sa * sb / (n * na * nb)
    sd0 = math.sqrt(ssa * ssb / (n - 1)) / (na * nb)
    if sd0 <= 0:
        return None
    return (m.cosine_sim - mean0) / sd0


def detect_unrelated(ctx: Context) -> Finding | None:
    zs = [(m, z) for m in ctx.matrices if (z := null_z(m)) is not None]
    total = sum(m.n_params for m, _ in zs)
    if not zs or not ctx.changed:
        return None
    inside = [(m, z) for m, z in zs if abs(z) <= UNRELATED_Z]
    frac = sum(m.n_params for m, _ in inside) / total
    if frac < UNRELATED_MIN_FRACTION:
        return None
    med = sorted(abs(z) for _, z in zs)[len(zs) // 2]
    mean_cos = sum(m.cosine_sim for m, _ in zs) / len(zs)
    return finding(
        "unrelated_models", "warning", "B is not derived from A",
        f"{frac:.0%} of the matrix weights have a cosine with A inside the permutation null (|z| <= "
        f"{UNRELATED_Z:g}; median |z| {med:.1f}, mean cosine {mean_cos:.4f}): the weights are uncorrelated, "
        "as for an independent initialisation or training run. Per-module deltas are not a fine-tune.",
        {"fraction_within_null": frac, "median_abs_z": med, "mean_cosine": mean_cos, "z_threshold": UNRELATED_Z,
         "n_matrices": len(zs)},
        metric_value=frac,
    )


def _cast_holds(m: ModuleDelta, fmt: str) -> bool:
    """Every entry of B on the format's grid and every change a one-ULP rounding of an off-grid A."""
    on_grid, n_rounded = m.forensics.cast(fmt)
    return on_grid and n_rounded == nnz(m) > 0


def detect_precision_change(ctx: Context) -> Finding | None:
    if not ctx.changed:
        return None
    for fmt in CAST_FORMATS:
        if all(_cast_holds(m, fmt) for m in ctx.changed):
            stored = sorted({m.dtype_b for m in ctx.changed})
            kept = len(ctx.mods) - len(ctx.changed)
            rel = max(m.frob_norm_relative for m in ctx.changed)
            saved = "saved back as " + "/".join(stored) if stored != [fmt] else f"stored as {fmt}"
            return finding(
                "precision_change", "notable", f"Cast to {fmt}",
                f"Every change in {len(ctx.changed)} tensors is A rounded to a neighbouring {fmt} value, and B's "
                f"entries all lie on the {fmt} grid ({saved}); {kept} tensors kept their values. No training.",
                {"format": fmt, "stored_dtypes": stored, "n_tensors_cast": len(ctx.changed), "n_tensors_kept": kept,
                 "max_relative_change": rel},
                metric_value=fmt,
            )
    return None


def quant_grid(m: ModuleDelta) -> dict | None:
    """How B's sampled rows sit on a quantizer's grid: the coarsest granularity whose groups all lie on a
    uniform <= 8-bit grid; else the codebook (NF4-like) with the fewest levels, coarsest on a tie (the
    union of several groups' codebooks at a coarser granularity has more levels)."""
    tests = [(g, q) for g in QUANT_GRANULARITIES if (q := m.forensics.quant(g)) is not None and q.n > 0]
    for label, q in tests:
        bits = int(q.bits)
        if q.grid == q.n and 0 < bits <= QUANT_MAX_BITS:
            return {"granularity": label, "bits": bits, "group_size": int(q.size), "scheme": "uniform"}
    best: dict | None = None
    for label, q in tests:
        levels, size = int(q.levels), int(q.size)
        if levels < 2 or levels * CODEBOOK_ENTRIES_PER_LEVEL > size:
            continue
        bits = math.ceil(math.log2(levels))
        if bits <= QUANT_MAX_BITS and (best is None or bits < best["bits"]):
            best = {"granularity": label, "bits": bits, "group_size": size, "scheme": "codebook"}
    return best


def detect_quantization(ctx: Context) -> Finding | None:
    tested = [m for m in ctx.changed_matrices if any((q := m.forensics.quant(g)) is not None and q.n > 0
                                                     for g in QUANT_GRANULARITIES)]
    if not tested or len(tested) < len(ctx.changed_matrices):
        return None
    grids = [quant_grid(m) for m in tested]
    if any(g is None for g in grids):
        return None
    bits = max(g["bits"] for g in grids if g)
    labels = [g["granularity"] for g in grids if g]
    label = max(set(labels), key=labels.count)
    per_row = label == "row"
    group = None if per_row else int(label[1:])
    schemes = sorted({g["scheme"] for g in grids if g})
    kept = len(ctx.mods) - len(ctx.changed)
    where = "per row (output channel)" if per_row else f"per group of {group}"
    return finding(
        "quantization_roundtrip", "notable", f"{bits}-bit quantize/dequantize round trip",
        f"The sampled rows of all {len(tested)} changed matrices lie on a {bits}-bit "
        f"{'uniform grid' if schemes == ['uniform'] else 'codebook'} {where}: B was quantized and "
        f"dequantized (or exported from a quantized model). {kept} tensors were left unquantized.",
        {"bits": bits, "granularity": "per_row" if per_row else "per_group", "group_size": group,
         "scheme": schemes[0] if len(schemes) == 1 else schemes, "n_tensors": len(tested), "n_tensors_kept": kept,
         "roles": sorted_roles(tested)},
        metric_value=bits,
    )
