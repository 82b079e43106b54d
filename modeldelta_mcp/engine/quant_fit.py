"""Which quantizer's grid a sample of dequantized weights sits on, allowing for the storing format's rounding.

Quantizers store w ≈ o + s·q (integer grids, symmetric or with a zero point), s·c[q] (a codebook: NF4,
FP4, with one absmax s per block) or s·f (an FP8 value f, one scale per tensor or per output channel),
then save the dequantized values in float32, bfloat16 or float16. Each stored value v then carries a
rounding error of at most u·|v| (u: unit roundoff of the coarsest float grid holding the values), so
v is not on the grid but within u·|v| of it. The tests here judge every value against its own bound:
small values are nearly exact and carry the evidence, large values in a half-precision format may be
uninformative (a bound of a quarter step or more says nothing) and are skipped.

A hypothesis (format, granularity, group size) holds on a sample when every informative value lies
within its bound of the grid (a few misses allowed for the quantizer's own arithmetic) and the values
carry enough evidence: Σ log2(1/(2·tol)) over informative values — the improbability, in bits, that
values off any grid would land within their bounds by chance — reaches EVIDENCE_MIN_BITS.
Cost: bounded by the sample (at most 32 rows); each hypothesis is first tried on PROBE_VALUES values of
the first group and on the whole sample only when those hold, so a trained float tensor is rejected after
a few vectorized passes over a few hundred values (numpy: no thread wake-ups for small arrays).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from modeldelta_mcp.numerics import QUANT_GROUPS, QUANT_MAX_BITS

# A rounded value v is within ROUNDING_MARGIN·u·|v| of its grid point: one rounding when stored, and one
# more when the dequantization itself ran in the storing format (s·q rounded, then the offset added).
ROUNDING_MARGIN = 2.0
# A value whose bound reaches this fraction of the local grid spacing tells a grid from chance poorly
# (a uniform value lands within ±0.25 of a grid point half the time): not evidence.
TOL_CAP = 0.25
# Improbability (bits) that all informative values of a tensor's sample land on the grid by chance.
# 64 bits: a false grid once in 2^64 tensors; real quantized samples carry thousands of bits.
EVIDENCE_MIN_BITS = 64.0
# A value's evidence is capped (a value stored exactly does not prove more than this).
MAX_BITS_PER_VALUE = 20.0
# The quantizer's own float arithmetic (a scale rounded before use, fused multiply-adds) can put a rare
# value just outside its bound; more misses than this share of the informative values reject the grid.
MAX_MISS_SHARE = 0.002
# Sub-multiples of the smallest well-resolved gap tried as the step: with fewer samples than levels two
# adjacent levels may never both occur, so the smallest gap can be 2..8 steps.
MAX_SUBSTEP = 8
# Least-squares refits of the step: the first uses the levels the gap's step resolves, the next ones the
# levels the refined step resolves (further from the anchor).
REFITS = 3
# A difference is "well resolved" when its rounding bound is below this share of it.
RESOLVED_SHARE = 0.05
# Rows narrower than this carry too few values to tell a grid from chance (engine/forensics.py).
MIN_GROUP = 16
# A finer granularity replaces a coarser one whose grid also holds when its groups' steps are this many
# times coarser: a true coarse grid gives subsets the same step (or a multiple, for a group missing
# levels: rare over 32+ values), a spurious fine grid a step several times smaller.
FINER_STEP_RATIO = 1.5
# Absmax block sizes of block-wise codebook quantizers (bitsandbytes NF4/FP4 default 64).
CODEBOOK_BLOCKS = (64, 128, 32, 256)

# bitsandbytes' NF4 code (quantiles of N(0, 1) normalised to [-1, 1]) and its FP4 code; the OCP/MX e2m1
# values (0, 0.5, ..., 6) normalised by 6.
NF4_CODE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0)
_FP4_BNB_POS = (0.0, 0.0052083334885537624, 1 / 6, 0.25, 1 / 3, 0.5, 2 / 3, 1.0)
_FP4_E2M1_POS = (0.0, 0.5 / 6, 1 / 6, 1.5 / 6, 2 / 6, 3 / 6, 4 / 6, 1.0)
CODEBOOKS = {
    "nf4": (NF4_CODE,),
    "fp4": (tuple(sorted({*_FP4_BNB_POS, *(-c for c in _FP4_BNB_POS)})),
            tuple(sorted({*_FP4_E2M1_POS, *(-c for c in _FP4_E2M1_POS)}))),
}
# FP8 formats: (name, torch dtype, largest finite value, mantissa bits, smallest normal exponent).
# e5m2 first: its grid is the coarser one.
FP8_FORMATS = (("fp8_e5m2", "float8_e5m2", 57344.0, 2, -14), ("fp8_e4m3", "float8_e4m3fn", 448.0, 3, -6))
# Values of row 0 and of column 0 in the gate (_gate): a grid shared by as many values as the smallest group.
GATE_VALUES = 32
# ... and of row 0: more values, as int8 stored in bfloat16 carries about a bit per value.
GATE_ROW_VALUES = 128
# Evidence a gate group must carry (bits): values in a half-precision format too coarse for the grid are
# all uninformative and must not open the gate.
GATE_MIN_BITS = 8.0
# A probe: the first group, cut to this many values; the full test runs only when the probe holds.
PROBE_VALUES = 512


@dataclass(frozen=True)
class GridFit:
    """A quantizer's grid that the sample fits."""

    number_format: str  # int_symmetric | int_asymmetric | nf4 | fp4 | fp8_e4m3 | fp8_e5m2
    granularity: str  # per_tensor | per_row | per_column | per_group | per_block
    group_size: int | None
    bits: int
    n_groups: int
    evidence_bits: float
    misses: int
    levels: int  # most distinct values in a group
    step: float | None = None  # the grid step (uniform, per tensor): the tensor's range sets the bits
    span_levels: float | None = None  # levels spanned in the sample (uniform, per tensor)
    median_step: float | None = None  # median of the groups' steps (uniform grids)


@dataclass(frozen=True)
class UniformResult:
    """The uniform-grid test of one granularity (the q_<label>_* counters)."""

    tested: int
    on_grid: int
    bits: int
    levels: int
    size: int


@dataclass
class _Verdict:
    ok: bool  # every group: its informative values on the grid (up to the allowed misses)
    evidence: float  # bits, summed over groups
    misses: int
    groups_ok: np.ndarray  # per group


def _judge(resid: np.ndarray, tol: np.ndarray, trivial: np.ndarray, free: int = 0) -> _Verdict:
    """Residuals (in units of the local spacing) against per-value bounds, per group (rows).

    `trivial` values lie on every grid of the family (zero, the anchor, the absmax that set the scale)
    and are not evidence; `free` parameters fitted per group (a step) each explain one value, whose
    evidence is not counted."""
    informative = (tol < TOL_CAP) & ~trivial
    miss = (np.abs(resid) > tol) & informative
    n_inf = informative.sum(axis=1)
    n_miss = miss.sum(axis=1)
    groups_ok = n_miss <= MAX_MISS_SHARE * n_inf
    ok = bool(groups_ok.all())
    evidence = 0.0
    if ok:  # the log only where it is needed
        t = np.clip(tol, 2.0**-MAX_BITS_PER_VALUE, None)
        bits = np.where(informative, np.clip(np.log2(1.0 / (2.0 * t)), 0.0, MAX_BITS_PER_VALUE), 0.0)
        explained = free * bits.max(axis=1) if bits.shape[1] else 0.0  # the value that set the parameter
        evidence = float(np.clip(bits.sum(axis=1) - explained, 0.0, None).sum())
    return _Verdict(ok, evidence, int(n_miss.sum()), groups_ok)


def _uniform(g: np.ndarray, unit: float, float_offset: bool) -> tuple[_Verdict, np.ndarray, np.ndarray]:
    """Uniform grids {o + k·s}: whether every group fits one, its step, and which groups had a step.

    The anchor o is the group's value of least magnitude (the most precise one). The step is the smallest
    well-resolved gap between neighbouring values or a sub-multiple of it (the largest that fits, with at
    most 2^QUANT_MAX_BITS levels), refined by least squares over the informative values. Rounding bound
    of v - o: margin·u·(|v| + |o|); with a float offset (w = o + s·q computed in the storing format) the
    product s·q is rounded too, adding u·(max - min) of the group. The refined step is off by at most
    the largest bound divided by the largest level, which the level-k bound carries k times. Groups
    whose values are all equal carry no evidence and hold.
    """
    absg = np.abs(g)
    anchor = np.take_along_axis(g, absg.argmin(axis=1)[:, None], axis=1)
    err = ROUNDING_MARGIN * unit * (absg + np.abs(anchor))
    srt = np.sort(g, axis=1)
    gaps = np.diff(srt, axis=1)
    gap_err = ROUNDING_MARGIN * unit * (np.abs(srt[:, 1:]) + np.abs(srt[:, :-1]))
    if float_offset:
        spread = unit * (srt[:, -1:] - srt[:, :1])
        err = err + spread
        gap_err = gap_err + 2 * spread
    d = g - anchor
    cand = np.where((gaps * RESOLVED_SHARE > gap_err) & (gaps > 0), gaps, np.inf)
    i0 = cand.argmin(axis=1)[:, None]
    s0 = np.take_along_axis(cand, i0, axis=1)
    has_step = np.isfinite(s0[:, 0])
    s0 = np.where(np.isfinite(s0), s0, 1.0)
    rel_s0 = np.take_along_axis(gap_err, i0, axis=1) / s0  # relative uncertainty of s0
    done = ~has_step
    step = s0.copy()
    # the gap's own step first (real grids: nearly always), then its sub-multiples, all at once
    for js in ((1,), tuple(range(2, MAX_SUBSTEP + 1))):
        todo = np.flatnonzero(~done)
        if todo.size == 0:
            break
        ok, s_fit = _try_steps(d[todo], err[todo], s0[todo], rel_s0[todo], js, unit)
        step[todo] = s_fit
        done[todo] = ok
    tol, k = _uniform_tol(d, err, step, unit)
    final = _judge(d / step - k, tol, (d == 0) | ~has_step[:, None], free=1)
    final.ok = bool(done.all())
    return final, step, done


def _uniform_tol(d: np.ndarray, err: np.ndarray, step: np.ndarray, unit: float) -> tuple[np.ndarray, np.ndarray]:
    k = np.rint(d / step)
    kmax = np.maximum(np.abs(k).max(axis=-1, keepdims=True), 1.0)
    step_err = ROUNDING_MARGIN * (err.max(axis=-1, keepdims=True) / (step * kmax) + unit)
    return err / step + np.abs(k) * step_err + 1e-12, k


def _try_steps(d: np.ndarray, err: np.ndarray, s0: np.ndarray, rel_s0: np.ndarray, js: tuple[int, ...],
               unit: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps s0/j for each j in js, vectorized over j: per group, whether one fits (the smallest such j) and
    the refined step."""
    jj = np.asarray(js, dtype=np.float64)[:, None, None]
    s = s0[None] / jj  # J × G × 1
    dd, ee = d[None], err[None]
    k = np.rint(dd / s)
    tol = ee / s + np.abs(k) * rel_s0[None]
    s_fit = s
    for _ in range(REFITS):  # each refit resolves levels further from the anchor
        kk = np.where((tol < TOL_CAP) & (k != 0), k, 0.0)
        den = (kk * kk).sum(axis=2, keepdims=True)
        s_fit = np.where(den > 0, (kk * dd).sum(axis=2, keepdims=True) / np.maximum(den, 1.0), s_fit)
        tol, k = _uniform_tol(dd, ee, s_fit, unit)
    n_j, n_g, n = k.shape
    v = _judge((dd / s_fit - k).reshape(-1, n), tol.reshape(-1, n), np.broadcast_to(dd == 0, k.shape).reshape(-1, n))
    narrow = (k.max(axis=2) - k.min(axis=2)) <= (1 << QUANT_MAX_BITS) - 1
    fits = v.groups_ok.reshape(n_j, n_g) & narrow
    first = fits.argmax(axis=0)  # the largest step that fits
    return fits.any(axis=0), s_fit[first, np.arange(n_g)]


def _zero_on_grid(g: np.ndarray, step: np.ndarray, unit: float) -> np.ndarray:
    """Per group: is zero a level of the grid (the anchor a multiple of the step)?"""
    anchor = np.take_along_axis(g, np.abs(g).argmin(axis=1)[:, None], axis=1)
    r = anchor / step
    tol = np.maximum(ROUNDING_MARGIN * unit * np.abs(anchor) / step, 1e-6)
    return (np.abs(r - np.rint(r)) <= tol)[:, 0]


def _codebook(g: np.ndarray, code: np.ndarray, unit: float) -> _Verdict:
    """Blocks scaled by their absmax on a codebook: v/absmax within its bound of a code value."""
    amax = np.maximum(np.abs(g).max(axis=1, keepdims=True), 1e-300)
    c = g / amax
    idx = np.clip(np.searchsorted(code, c), 1, len(code) - 1)
    lo, hi = code[idx - 1], code[idx]
    near = np.where(np.abs(c - lo) <= np.abs(hi - c), lo, hi)
    spacing = np.maximum(hi - lo, 1e-12)
    # v and the absmax are both rounded: |c - code| <= margin·u·(|c| + 1), judged against the spacing
    tol = ROUNDING_MARGIN * unit * (np.abs(c) + 1.0) / spacing + 1e-9
    return _judge((c - near) / spacing, tol, (c == 0) | (np.abs(c) == 1))


def _fp8_scales(fmax: float, mantissa_bits: int) -> list[float]:
    """FP8 values f tried as the image of the group's absmax (s = absmax/f), largest first.

    A per-channel absmax maps to the format's max; with one scale per tensor (or in a probe of part of a
    row) the sample's absmax can be any FP8 value below it. A power of
    two keeps normal FP8 values FP8 values, and mapping higher only makes small values normal, never
    unrepresentable; so one candidate per mantissa in the top binade suffices.
    """
    e = math.floor(math.log2(fmax))
    cands = {(1 + i / (1 << mantissa_bits)) * 2.0 ** e for i in range(1 << mantissa_bits)}
    cands |= {(1 + i / (1 << mantissa_bits)) * 2.0 ** (e - 1) for i in range(1 << mantissa_bits)}
    top = sorted((c for c in cands if c <= fmax), reverse=True)
    # one per mantissa: the largest representative of each mantissa
    seen: set[float] = set()
    out = []
    for c in top:
        m = c / 2.0 ** math.floor(math.log2(c))
        if m not in seen:
            seen.add(m)
            out.append(c)
    return out


def _fp8(g: np.ndarray, fmt: tuple[str, str, float, int, int], unit: float) -> _Verdict:
    """Values s·f with f an FP8 value: v/s on the FP8 grid, s = absmax/f, all candidate f at once (the first
    that fits every group wins)."""
    _, dtype_name, fmax, mantissa_bits, emin = fmt
    dtype = getattr(torch, dtype_name)
    amax = np.maximum(np.abs(g).max(axis=1, keepdims=True), 1e-300)
    f = np.asarray(_fp8_scales(fmax, mantissa_bits), dtype=np.float64)[:, None, None]  # C × 1 × 1
    q = np.clip(g[None] * (f / amax[None]), -fmax, fmax)  # C × G × n
    q8 = torch.from_numpy(q).to(dtype).double().numpy()
    _, exp = np.frexp(q8)  # q8 = m·2^exp, 0.5 <= |m| < 1: spacing 2^(exp-1-mantissa_bits)
    spacing = np.exp2(np.maximum(exp - 1, emin) - mantissa_bits).astype(np.float64)
    # v and the absmax are both rounded: |q - f(q)| <= margin·u·(|q| + f)
    tol = ROUNDING_MARGIN * unit * (np.abs(q) + f) / spacing + 1e-9
    n_c, n_g, n = q.shape
    v = _judge(((q - q8) / spacing).reshape(-1, n), tol.reshape(-1, n),
               ((q == 0) | (np.abs(q) == f)).reshape(-1, n))
    fits = v.groups_ok.reshape(n_c, n_g).all(axis=1)
    c = int(fits.argmax()) if bool(fits.any()) else 0
    return _judge((q[c] - q8[c]) / spacing[c], tol[c], (q[c] == 0) | (np.abs(q[c]) == f[c]))


def _groups(x: np.ndarray) -> list[tuple[str, int | None, np.ndarray]]:
    """Granularities of a grid's scale, coarsest first: (label, group size, groups × values)."""
    rows, cols = x.shape
    out: list[tuple[str, int | None, np.ndarray]] = [("per_tensor", None, x.reshape(1, -1)), ("per_row", None, x)]
    if rows >= MIN_GROUP:
        out.append(("per_column", None, np.ascontiguousarray(x.T)))
    for g in QUANT_GROUPS:
        if g < cols and cols % g == 0:
            out.append(("per_group", g, x.reshape(-1, g)))
    return out


def _probe_then_all(groups: np.ndarray, test: Callable[[np.ndarray], _Verdict]) -> _Verdict:
    """`test` on the first PROBE_VALUES values of the first group; on all groups only when those hold."""
    probe = test(groups[:1, :PROBE_VALUES])
    if not probe.ok or (probe.evidence <= 0 and groups.size <= PROBE_VALUES):
        return probe
    return test(groups) if groups.size > min(groups.shape[1], PROBE_VALUES) else probe


def _distinct(groups: np.ndarray) -> int:
    s = np.sort(groups[:4], axis=1)
    return int((1 + (s[:, 1:] > s[:, :-1]).sum(axis=1)).max())


def _holds(v: _Verdict) -> bool:
    return v.ok and v.evidence >= EVIDENCE_MIN_BITS


def _fit(v: _Verdict, fmt: str, label: str, size: int | None, bits: int, groups: np.ndarray) -> GridFit:
    return GridFit(fmt, label, size, bits, int(groups.shape[0]), v.evidence, v.misses, _distinct(groups))


def _uniform_fit(label: str, size: int | None, groups: np.ndarray,
                 unit: float) -> tuple[GridFit | None, UniformResult]:
    for float_offset in (False, True):
        v = _probe_then_all(groups, lambda g, fo=float_offset: _uniform(g, unit, fo)[0])  # type: ignore[misc]
        if _holds(v):
            break
    result = UniformResult(int(groups.shape[0]), int(v.groups_ok.sum()) if v.groups_ok.size == groups.shape[0]
                           else 0, 0, 0, int(groups.shape[1]))
    if not _holds(v):
        return None, result
    _, step, _ = _uniform(groups, unit, float_offset)
    anchor = np.take_along_axis(groups, np.abs(groups).argmin(axis=1)[:, None], axis=1)
    levels = np.rint((groups - anchor) / step)  # level indices relative to the anchor
    span = levels.max(axis=1) - levels.min(axis=1)
    bits = max(1, math.ceil(math.log2(float(span.max()) + 1)))
    result = UniformResult(result.tested, result.on_grid, bits, _distinct(groups), result.size)
    if bits > QUANT_MAX_BITS:
        return None, result
    zero = _zero_on_grid(groups, step, unit)
    full_range = span >= (1 << bits) - 1  # min-max quantizers use every code of their range
    asym = float((~zero | full_range).mean()) >= 0.5
    fit = replace(_fit(v, "int_asymmetric" if asym else "int_symmetric", label, size, bits, groups),
                  median_step=float(np.median(step)))
    if label == "per_tensor":
        fit = replace(fit, step=float(step[0, 0]), span_levels=float(span.max()))
    return fit, result


def _codebook_fit(x: np.ndarray, unit: float) -> GridFit | None:
    flat = x.reshape(-1)
    for block in CODEBOOK_BLOCKS:
        n = flat.size // block * block
        if n < 2 * block:
            continue
        blocks = flat[:n].reshape(-1, block)
        for name, codes in CODEBOOKS.items():
            for code in codes:
                book = np.asarray(code, dtype=np.float64)
                v = _probe_then_all(blocks, lambda g, c=book: _codebook(g, c, unit))  # type: ignore[misc]
                if _holds(v):
                    return _fit(v, name, "per_block", block, 4, blocks)
    return None


def _gate(xs: np.ndarray, unit: float) -> bool:
    """Could any hypothesis hold? The first values of row 0 (128 for a per-row scale, 32 for the smallest
    group) and of column 0 (one grid each for every scale granularity) and the first absmax block of each
    size are tested. A trained float tensor fails them all in about a millisecond and is spared the full
    tests."""
    heads = [xs[None, 0, :GATE_ROW_VALUES].astype(np.float64), xs[None, 0, :GATE_VALUES].astype(np.float64)]
    if xs.shape[0] >= MIN_GROUP:
        heads.append(xs[None, :GATE_VALUES, 0].astype(np.float64))

    def passes(v: _Verdict) -> bool:
        return v.ok and v.evidence >= GATE_MIN_BITS

    for g in heads:
        if len(np.unique(g)) <= g.shape[1] // 2:  # repeats: a continuous distribution shows none
            return True
        if any(passes(_uniform(g, unit, fo)[0]) for fo in (False, True)):
            return True
        if any(passes(_fp8(g, fmt, unit)) for fmt in FP8_FORMATS):
            return True
    flat = xs.reshape(-1)
    for block in CODEBOOK_BLOCKS:
        if flat.size >= block:
            first = flat[:block][None, :].astype(np.float64)
            if any(passes(_codebook(first, np.asarray(code), unit)) for codes in CODEBOOKS.values() for code in codes):
                return True
    return False


def fit_quantizer(x: torch.Tensor, unit: float) -> tuple[GridFit | None, dict[str, UniformResult]]:
    """The quantizer grid the sample x (rows × cols of one matrix, as stored) sits on, or None.

    Every granularity is tried and _choose picks one. A codebook (NF4, FP4: 4 bits) is tried only when no
    uniform grid of at most 4 bits fits (int2/int3 levels are FP4 code values). Also returns the uniform
    test per row and per group (the q_<label>_* counters).
    """
    legacy: dict[str, UniformResult] = {}
    if x.dim() != 2 or x.shape[1] < MIN_GROUP:
        return None, legacy
    xs = x.float().numpy()
    if not _gate(xs, unit):
        return None, legacy
    xs = xs.astype(np.float64)
    found: list[GridFit] = []  # coarsest granularity first
    for label, size, groups in _groups(xs):
        fit, result = _uniform_fit(label, size, groups, unit)
        if label == "per_row":
            legacy["row"] = result
        elif label == "per_group":
            legacy[f"g{size}"] = result
        if fit is None and label in ("per_tensor", "per_row"):
            for fmt in FP8_FORMATS:
                v = _probe_then_all(groups, lambda g, f=fmt: _fp8(g, f, unit))  # type: ignore[misc]
                if _holds(v):
                    fit = _fit(v, fmt[0], label, None, 8, groups)
                    break
        if fit is not None:
            found.append(fit)
    if not any(f.bits <= 4 for f in found):
        book = _codebook_fit(xs, unit)
        if book is not None:
            found.append(book)
    if not found:
        return None, legacy
    return _choose(found), legacy


def _choose(found: list[GridFit]) -> GridFit:
    """The coarsest granularity whose grid holds, unless a finer one holds with a coarser step.

    A grid also holds on any subset of its groups, with the same step, so the coarsest is the quantizer's
    own. But rounded values of a few levels per group (int3 stored in bf16) can also sit within their
    bounds of a much finer shared grid: a finer granularity whose groups' steps are at least
    FINER_STEP_RATIO times the coarse step is then the real one. A codebook is chosen over a uniform grid
    of more bits (FP4's values are a 5-bit uniform grid)."""
    best = found[0]
    for fit in found[1:]:
        if fit.median_step is not None and best.median_step is not None:
            if fit.median_step >= FINER_STEP_RATIO * best.median_step:
                best = fit
        elif fit.bits < best.bits:
            best = fit
    return best
