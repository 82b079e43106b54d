"""Whole-model transforms: nothing changed, a different model, a float cast, a quantize round trip."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from modeldelta_mcp.diagnosis.fingerprints.context import (
    Context,
    finding,
    nnz,
    sorted_roles,
)
from modeldelta_mcp.models import Finding, ModuleDelta
from modeldelta_mcp.numerics import CAST_FORMATS

# Permutation null of cos(vec A, vec B): shuffling B's entries gives cosines with the mean and spread
# below; |z| beyond this many null standard deviations happens by chance with p < 6e-7 per tensor.
UNRELATED_Z = 5.0
# "B is not derived from A": most of the weights (by parameters) sit inside the null. A derived model
# keeps nearly every tensor far outside it (z of hundreds); re-initialised parts stay a minority.
UNRELATED_MIN_FRACTION = 0.5
# `scheme` (the evidence key of the first version) for each number format.
SCHEMES = {"int_symmetric": "uniform", "int_asymmetric": "uniform", "nf4": "codebook", "fp4": "codebook",
           "fp8_e4m3": "float", "fp8_e5m2": "float"}


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


def is_cast(m: ModuleDelta, fmt: str) -> bool:
    """B's tensor is A's rounded to the format (every entry on its grid, every change a one-ULP rounding)."""
    return _cast_holds(m, fmt)


def only_rounded(m: ModuleDelta) -> bool:
    """B's tensor is A's rounded to the half-precision format B stores it in (a quantized checkpoint keeps
    its embeddings, head and norms in the model's float dtype: that rounding is part of storing it)."""
    return m.dtype_b in ("bfloat16", "float16") and _cast_holds(m, m.dtype_b)


def storage_format(mods: list[ModuleDelta]) -> str:
    """The coarsest float grid holding every entry of these B tensors: how they were stored."""
    for fmt in ("bfloat16", "float16"):
        if mods and all(m.forensics.cast(fmt)[0] for m in mods):
            return fmt
    return "float32"


@dataclass
class QuantizationStep:
    finding: Finding
    quantized: list[ModuleDelta]
    cast: list[ModuleDelta]  # left unquantized, rounded to the storing format
    other: list[ModuleDelta]  # changed otherwise (training before the quantization)


def quantization_step(ctx: Context) -> QuantizationStep | None:
    """B's matrices on a quantizer's grid (QuantGrid of each changed matrix's sampled rows).

    Holds when most changed matrices are quantized. Tensors the quantizer left alone (embeddings, norms,
    biases) are either unchanged, or rounded to the float format the model was stored in (part of the
    same step), or changed otherwise: then a training step came first."""
    quantized = [m for m in ctx.changed_matrices if m.forensics.quant_b is not None]
    if not quantized or 2 * len(quantized) < len(ctx.changed_matrices):
        return None
    fmt = storage_format(quantized)
    rest = [m for m in ctx.changed if m.forensics.quant_b is None]
    cast = [m for m in rest if fmt != "float32" and is_cast(m, fmt)]
    other = [m for m in rest if m not in cast]
    grids = [m.forensics.quant_b for m in quantized if m.forensics.quant_b is not None]
    formats = Counter(g.number_format for g in grids)
    number_format = formats.most_common(1)[0][0]
    main = [g for g in grids if g.number_format == number_format]
    grans = Counter((g.granularity, g.group_size) for g in main)
    (granularity, group), _ = grans.most_common(1)[0]
    bits = max(g.bits for g in main)
    scheme = SCHEMES[number_format]
    kept = len(ctx.mods) - len(quantized)
    where = {"per_tensor": "per tensor", "per_row": "per output channel (row)", "per_column": "per input column",
             "per_group": f"per group of {group} inputs", "per_block": f"per absmax block of {group}"}[granularity]
    name = {"int_symmetric": f"int{bits} symmetric", "int_asymmetric": f"int{bits} with zero points",
            "nf4": "NF4", "fp4": "FP4", "fp8_e4m3": "FP8 e4m3", "fp8_e5m2": "FP8 e5m2"}[number_format]
    finding_ = finding(
        "quantization_roundtrip", "notable", f"Quantize/dequantize round trip ({name}, {where})",
        f"The sampled rows of {len(quantized)} of {len(ctx.changed_matrices)} changed matrices lie on a {name} grid "
        f"{where}, within the rounding of the {fmt} values they were stored as: B was quantized and dequantized "
        f"(or exported from a quantized model). {kept} tensors were not quantized"
        + (f" ({len(cast)} of them only rounded to {fmt})" if cast else "") + ".",
        {"bits": bits, "scheme": scheme, "number_format": number_format,
         "granularity": granularity, "group_size": group, "n_tensors": len(quantized), "n_tensors_kept": kept,
         "stored_format": fmt, "roles": sorted_roles(quantized), "tensors": [m.name for m in quantized],
         "formats": dict(formats), "min_evidence_bits": min(g.evidence_bits for g in grids)},
        metric_value=bits,
    )
    return QuantizationStep(finding_, quantized, cast, other)


def detect_quantization(ctx: Context) -> Finding | None:
    step = quantization_step(ctx)
    return step.finding if step is not None and not step.other else None


@dataclass
class CastStep:
    finding: Finding
    cast: list[ModuleDelta]  # only rounded
    other: list[ModuleDelta]  # changed otherwise first (training), then rounded


def cast_step(ctx: Context) -> CastStep | None:
    """B stored in a half-precision format that A was not in: a cast after whatever else changed B.

    Every changed tensor of B lies on the format's grid; the tensors whose every change is a one-ULP
    rounding of A were only cast, the others were changed first (their A must have been off the grid:
    training done in the format itself is no cast). Coarsest format first (bf16 values may all be fp16
    values too)."""
    if not ctx.changed:
        return None
    for fmt in ("bfloat16", "float16"):
        if not all(m.forensics.cast(fmt)[0] for m in ctx.changed):
            continue
        cast = [m for m in ctx.changed if _cast_holds(m, fmt)]
        other = [m for m in ctx.changed if m not in cast]
        a_off = [m for m in ctx.changed if _a_on_grid(m, fmt) is False]
        if not cast and not a_off:
            continue  # nothing shows that A had more precision
        if other and not all(_a_on_grid(m, fmt) is False for m in other):
            continue
        stored = sorted({m.dtype_b for m in ctx.changed})
        kept = len(ctx.mods) - len(ctx.changed)
        f = finding(
            "precision_change", "notable", f"Cast to {fmt}",
            f"Every changed tensor of B lies on the {fmt} grid while A did not"
            + (f"; {len(cast)} tensors changed only by rounding to it" if cast else "")
            + (f", {len(other)} changed before the cast" if other else "") + f"; {kept} tensors kept their values.",
            {"format": fmt, "stored_dtypes": stored, "n_tensors_cast": len(ctx.changed), "n_tensors_kept": kept,
             "n_tensors_only_cast": len(cast), "max_relative_change": max(m.frob_norm_relative for m in ctx.changed)},
            metric_value=fmt,
        )
        return CastStep(f, cast, other)
    return None


def _a_on_grid(m: ModuleDelta, fmt: str) -> bool | None:
    value = m.forensics.a_on_bfloat16_grid if fmt == "bfloat16" else m.forensics.a_on_float16_grid
    if value is None:
        return None
    return value == 1.0 or m.dtype_a == fmt
