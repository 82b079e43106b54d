"""B declares a quantization (GPTQ, AWQ, bitsandbytes, compressed-tensors, FP8, optimum-quanto, a GGUF type):
the scheme, checked against B's values, the error per layer and role, and the tensors left unquantized.

The declared scheme comes from the checkpoint's own files (CheckpointInfo.quantization, one group per
scheme; ModuleDelta.quant_b names each tensor's group). The check uses the engine's k-bit grid counters
on B's sampled rows (engine/forensics.py, q_<granularity>_*): inside one quantization group a b-bit
quantizer leaves at most 2^b distinct values, so a tested group that lies within one declared group and
holds more refutes the declaration; a uniform grid of at most b bits, or at most 2^b levels, supports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import median
from typing import Any

from modeldelta_mcp.diagnosis.fingerprints.context import Context, finding
from modeldelta_mcp.diagnosis.fingerprints.transforms import only_rounded
from modeldelta_mcp.models import Finding, ModuleDelta, QuantGroup
from modeldelta_mcp.numerics import QUANT_GRANULARITIES

# Layers named as the ones that lost most.
WORST_LAYERS = 3
# A round-to-nearest b-bit uniform grid over a group of n roughly Gaussian weights spans about
# 2·sqrt(2·ln n) standard deviations (the expected extremes), so its step is that span over 2^b − 1 and
# the RMS rounding error step/√12: relative to the weights' RMS that is the error the grid alone explains.
# B's error beyond EXCESS_RATIO times it is more change than quantizing A would make: B's source was
# trained away from A before it was quantized (recipe: fine-tune, then quantization).
EXCESS_RATIO = 3.0
# The Gaussian-grid estimate holds for uniform integer grids only (codebooks and float formats space
# their levels otherwise); per-row or per-tensor scales are taken as groups of this many entries.
UNIFORM_FORMATS = ("int_symmetric", "int_asymmetric")
ROW_GROUP = 1024


def expected_relative_error(bits: int, group: int) -> float:
    span = 2.0 * math.sqrt(2.0 * math.log(max(2, group)))
    return span / (2**bits - 1) / math.sqrt(12.0)


def _tested(m: ModuleDelta) -> list[tuple[int, int, int, bool]]:
    """(group size, levels, bits, on a uniform grid) per granularity the engine tested on B's rows."""
    out = []
    for label in QUANT_GRANULARITIES:
        q = m.forensics.quant(label)
        if q is not None and q.n > 0:
            out.append((int(q.size), int(q.levels), int(q.bits), q.grid == q.n))
    return out


def verdict(m: ModuleDelta, g: QuantGroup) -> tuple[str, int | None]:
    """consistent | inconsistent | unchecked, and the fewest bits of a grid found in B's values."""
    tests = _tested(m)
    if not tests or not g.bits or g.act_order:  # act-order groups are not contiguous runs of a row
        return "unchecked", None
    cap = 2**g.bits
    # Tested groups inside one declared group: any size for per-row/per-tensor scales, else at most its size.
    within = [t for t in tests if g.granularity in ("per_row", "per_tensor") or (g.group_size and t[0] <= g.group_size)]
    grid_bits = [t[2] for t in tests if t[3] and t[2] > 0]
    found = min(grid_bits) if grid_bits else None
    if any(levels > cap for _, levels, _, _ in within):
        return "inconsistent", found
    if (found is not None and found <= g.bits) or any(levels <= cap < size for size, levels, _, _ in within):
        return "consistent", found
    return "unchecked", found


def _layer_errors(mods: list[ModuleDelta]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    roles: dict[str, list[float]] = {}
    layers: dict[int, list[float]] = {}
    for m in mods:
        roles.setdefault(m.role, []).append(m.frob_norm_relative)
        if m.layer is not None:
            layers.setdefault(m.layer, []).append(m.frob_norm_relative)
    by_role = {r: sum(v) / len(v) for r, v in sorted(roles.items())}
    worst = sorted(({"layer": k, "relative_error": sum(v) / len(v)} for k, v in layers.items()),
                   key=lambda d: -d["relative_error"])[:WORST_LAYERS]
    return by_role, worst


def detect_declared_quantization(ctx: Context) -> Finding | None:
    groups = {g.label: g for g in ctx.quantization}
    quantized = [m for m in ctx.mods if m.quant_b in groups and m.name.endswith("weight")]
    if not quantized:
        return None
    used = sorted({m.quant_b for m in quantized if m.quant_b}, key=lambda k: -groups[k].n_params)
    main = groups[used[0]]
    checks = [(m, verdict(m, groups[m.quant_b])) for m in quantized if m.quant_b]
    bad = [m.name for m, (v, _) in checks if v == "inconsistent"]
    good = [m for m, (v, _) in checks if v == "consistent"]
    found = [b for _, (_, b) in checks if b is not None]
    consistency = "inconsistent" if bad else ("consistent" if good else "unchecked")
    kept = [m for m in ctx.mods if m.quant_b is None and m.n_params > 1]
    kept_roles: dict[str, int] = {}
    for m in kept:  # biases carry their module's role: name them apart from the module's weight
        key = f"{m.role} bias" if m.name.endswith("bias") else m.role
        kept_roles[key] = kept_roles.get(key, 0) + 1
    by_role, worst = _layer_errors(quantized)
    rel = median(m.frob_norm_relative for m in quantized)
    uniform = main.number_format in UNIFORM_FORMATS and main.bits
    expected = expected_relative_error(main.bits or 0, main.group_size or ROW_GROUP) if uniform else None
    excess = rel / expected if expected else None
    declared = sorted({groups[k].declared_scheme for k in used})
    evidence: dict[str, Any] = {
        "declared_scheme": declared[0] if len(declared) == 1 else declared,
        "format": main.format,
        "bits": main.bits,
        "group_size": main.group_size,
        "granularity": main.granularity,
        "number_format": main.number_format,
        "schemes": {k: groups[k].n_tensors for k in used},
        "consistency": consistency,
        "inconsistent_tensors": bad[:20],
        "measured_bits": max(found) if found else None,
        "median_relative_error": rel,
        "relative_error_by_role": by_role,
        "worst_layers": worst,
        "n_tensors": len(quantized),
        "n_tensors_kept": len(kept),
        "kept_roles": dict(sorted(kept_roles.items())),
        "kept_tensors": [m.name for m in kept][:20],
        "kept_changed": [m.name for m in kept if not m.identical][:20],
        "kept_rounded": [m.name for m in kept if not m.identical and only_rounded(m)][:20],
        "expected_relative_error": expected,
        "error_vs_grid": excess,
    }
    a_schemes = sorted({groups[m.quant_a].declared_scheme for m in ctx.mods if m.quant_a in groups})
    if a_schemes:
        evidence["declared_scheme_a"] = a_schemes[0] if len(a_schemes) == 1 else a_schemes
    where = f"group size {main.group_size}" if main.group_size else (main.granularity or "").replace("_", " ")
    named = main.format if declared == [main.format] else f"{main.format} {', '.join(declared)}"
    title = f"{named} ({main.bits}-bit, {where})" if main.bits else main.format
    detail = (f"B declares {title} for {len(quantized)} weights; median relative error {rel:.4f}"
              + (f", worst in layers {', '.join(str(w['layer']) for w in worst)}" if worst else "")
              + f". {len(kept)} tensors were left unquantized"
              + (f" ({', '.join(f'{r}: {n}' for r, n in sorted(kept_roles.items()))})" if kept_roles else "") + ". ")
    if consistency == "inconsistent":
        detail += (f"The values contradict the declaration: {len(bad)} tensors hold more distinct values per "
                   f"group than a {main.bits}-bit grid allows (e.g. {bad[0]}).")
    elif consistency == "consistent":
        detail += f"B's values lie on the declared {main.bits}-bit grid."
    else:
        detail += "B's values could not be checked against the declared grid at the engine's tested group sizes."
    # unquantized tensors only rounded to B's half-precision dtype were stored, not changed
    kept_changed = sum(1 for m in kept if not m.identical and not only_rounded(m))
    kept_rounded = sum(1 for m in kept if not m.identical and only_rounded(m))
    if excess is not None and excess > EXCESS_RATIO:
        detail += (f" The error is {excess:.1f}x what the grid alone explains: B's source differs from A "
                   "(a fine-tune of A, then quantized).")
    elif kept_changed:  # quantizing leaves the unquantized tensors as they were
        detail += (f" {kept_changed} of the unquantized tensors differ from A: B's source differs from A "
                   "(a fine-tune of A, then quantized).")
    if kept_rounded:
        detail += f" {kept_rounded} unquantized tensors were only rounded to the float format B stores them in."
    severity = "warning" if consistency == "inconsistent" else "notable"
    return finding("quantization_roundtrip", severity, f"Quantized checkpoint: {title}", detail, evidence,
                   metric_value=main.bits)


def with_declared(value_based: Callable[[Context], Finding | None]) -> Callable[[Context], Finding | None]:
    """The quantization_roundtrip detector: the declared scheme when B declares one, else the value-based
    grid fingerprint (whose evidence, when it also holds, is kept under `grid`)."""

    def detect(ctx: Context) -> Finding | None:
        declared = detect_declared_quantization(ctx)
        grid = value_based(ctx)
        if declared is None:
            return grid
        if grid is not None:
            declared.evidence["grid"] = grid.evidence
        return declared

    return detect
