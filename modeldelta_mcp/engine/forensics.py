"""Forensic counters per tensor pair, fed chunk by chunk next to the seed's metrics.

They are the evidence the method fingerprints (diagnosis/fingerprints/, docs/diagnosis.md) rest on:
float-format grids (precision casts), k-bit grids on a bounded sample of B's rows (quantization),
exact zeros and their pattern (pruning, DARE), exact-copy fingerprints (layer copies), the sums a
permutation null needs (unrelated models) and, from the full spectrum, the numerical rank above the
storage dtype's rounding floor and the deciles of σ (LoRA, Marchenko–Pastur). Memory is bounded:
scalars per tensor plus at most QUANT_SAMPLE_ROWS rows of B.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from modeldelta_mcp.models import ForensicCounters, QuantCounts
from modeldelta_mcp.numerics import (
    CAST_FORMATS,
    DECILE_KEYS,
    DECILES,
    QUANT_GROUPS,
    RANK_FLOOR_MARGIN,
    UNIT_ROUNDOFF,
    UNRESOLVED_MARGIN,
    unit_roundoff,
)

# Significand bits (with the implicit one) and the smallest exponent of an ULP (subnormal spacing).
_FORMAT_BITS = {"float16": (torch.float16, 11, -24), "bfloat16": (torch.bfloat16, 8, -133)}
FORMATS = {name: _FORMAT_BITS[name] for name in CAST_FORMATS}
# Entries checked before a whole chunk is tested against a float grid: an fp32 tensor fails here.
GRID_PROBE = 4096

# k-bit grid test on a sample of B's rows: the first rows of each matrix (a quantizer treats every
# row alike, so a few dozen rows decide; the cost stays bounded for any tensor size).
QUANT_SAMPLE_ROWS = 32
# Rows narrower than this carry too few values to tell a grid from chance.
QUANT_MIN_COLS = 16
# Sub-multiples of the smallest gap tried as the grid step: with fewer samples than levels two
# adjacent levels may never both occur, so the smallest gap can be 2..8 steps.
QUANT_MAX_SUBSTEP = 8
# Groups tested first; the rest only when all of these lie on a grid.
PROBE_GROUPS = 4
# A gap is "on the grid" when gap/step is an integer up to the rounding of the stored values
# (_grid_test); a group whose tolerance reaches this cap cannot tell a grid from chance and does
# not count as evidence.
QUANT_TOL_CAP = 0.25
# sv_cliff where the next σ is zero: any ratio this large already means an exact rank deficiency.
SV_CLIFF_MAX = 1e300


def ulp(x: torch.Tensor, bits: int, min_exp: int) -> torch.Tensor:
    """ULP of each |x| in a format with `bits` significand bits (subnormal spacing 2^min_exp)."""
    _, exp = torch.frexp(x)  # x = m·2^exp, 0.5 <= |m| < 1
    e = torch.clamp(exp - bits, min=min_exp).to(torch.float32)
    return torch.exp2(e)


@dataclass(frozen=True)
class Chunk:
    """One piece of a tensor pair as the accumulator sees it (see DeltaAccumulator.add)."""

    a: torch.Tensor  # float32, NaN/Inf zeroed
    b: torch.Tensor
    d: torch.Tensor  # b - a, float32
    stored_a: torch.dtype
    stored_b: torch.dtype
    changed: np.ndarray  # d != 0, flat
    nnz: int
    sums: tuple[float, float]  # float64 sums of a and b
    raw_a: torch.Tensor  # as read, in the stored dtype
    raw_b: torch.Tensor


def _raw_bytes(t: torch.Tensor) -> memoryview:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().data


def _on_grid(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).float() == x


def _all_on_grid(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """_on_grid(x, dtype).all() without the boolean pass (torch.equal is a vectorized compare)."""
    return torch.equal(x.to(dtype).float(), x)


def _grid_test(s: torch.Tensor, unit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For sorted informative groups s (float64): which lie on a uniform grid, and that grid's step."""
    gaps = s[:, 1:] - s[:, :-1]
    pos = gaps > 0
    gmin = torch.where(pos, gaps, torch.full_like(gaps, math.inf)).amin(dim=1, keepdim=True)
    amax = s.abs().amax(dim=1, keepdim=True)
    r = torch.where(pos, gaps / gmin, torch.zeros_like(gaps))
    # Each stored value carries a rounding error <= u·amax, so a gap is off by <= 2u·amax and the
    # ratio gap/gmin by <= 2u·amax·(1 + r)/gmin; twice that is the tolerance (times j for step gmin/j).
    err_unit = 4 * unit * amax * (1 + r) / gmin
    on = torch.zeros(s.shape[0], dtype=torch.bool)
    step = torch.zeros_like(gmin)
    for j in range(1, QUANT_MAX_SUBSTEP + 1):
        tol = err_unit * j
        rj = r * j
        miss = ((rj - rj.round()).abs() > tol) & pos
        testable = (torch.where(pos, tol, torch.zeros_like(tol)).amax(dim=1) < QUANT_TOL_CAP)
        ok = ~miss.any(dim=1) & testable & ~on
        step[ok] = (gmin / j)[ok]
        on |= ok
        if bool(on.all()):
            break
    return on, step


def grid_groups(x: torch.Tensor, unit: float) -> tuple[int, int, int, int]:
    """k-bit grid test of each row of x (groups × G): (tested, on_grid, max_bits, max_levels).

    A group lies on a uniform grid {o + q·s} when every gap between its sorted distinct values is
    an integer multiple of s; s is the smallest gap or a sub-multiple of it. Works for symmetric,
    zero-point and float-offset quantizers alike. `levels` counts distinct values (codebooks: NF4).
    Groups with fewer than 3 distinct values carry no evidence. The first PROBE_GROUPS decide
    whether the rest is tested: a quantizer treats every group alike.
    """
    s, _ = torch.sort(x.double(), dim=1)
    distinct = 1 + (s[:, 1:] > s[:, :-1]).sum(dim=1)
    informative = distinct >= 3
    s, distinct = s[informative], distinct[informative]
    if s.shape[0] == 0:
        return 0, 0, 0, 0
    on, step = _grid_test(s[:PROBE_GROUPS], unit)
    if bool(on.all()) and s.shape[0] > PROBE_GROUPS:
        on, step = _grid_test(s, unit)
    tested = on.shape[0]
    n_on = int(on.sum())
    bits = 0
    if n_on:
        span = (s[: tested, -1:] - s[: tested, :1])
        levels = (span[on] / step[on]).round() + 1
        bits = int(torch.ceil(torch.log2(levels.clamp_min(2))).max())
    return tested, n_on, bits, int(distinct[:tested].max())


class Forensics:
    """Forensic sums of one tensor pair; update() per chunk with the float32 a, b and delta d."""

    def __init__(self) -> None:
        self.numel = 0
        self.n_nonzero_delta = 0
        self.n_zero_b = 0
        self.n_pruned = 0
        self.sum_a2_pruned = 0.0
        self.sum_a = 0.0
        self.sum_b = 0.0
        self.crc_a = 0
        self.crc_b = 0
        self.b_dtype = "float32"
        self.on_grid = {f: True for f in FORMATS}  # every entry of B so far on that format's grid
        self.n_rounded = {f: 0 for f in FORMATS}  # changed entries that are a one-ULP rounding of A
        self.active_rows = 0  # chunk rows with any change
        self.active_entries = 0
        self.zero_pairs_active = 0  # horizontally adjacent unchanged entries inside active rows
        self.pairs_active = 0
        self.sample: list[torch.Tensor] = []
        self.sample_rows = 0
        self.sampled = True  # False once a chunk did not hold whole rows
        self.spectrum: dict[str, float] = {}  # ForensicCounters sv_* fields

    def update(self, c: Chunk, whole_rows: bool) -> None:
        a, b, d = c.a, c.b, c.d
        n = d.numel()
        nnz = c.nnz
        self.numel += n
        self.b_dtype = str(c.stored_b).removeprefix("torch.")
        self.sum_a += c.sums[0]
        self.sum_b += c.sums[1]
        # CRC of the stored bytes: half the bytes of a float32 view for bf16/fp16 files, and a copy
        # is bit-identical in its stored dtype (the fingerprint includes the size and the norm).
        self.crc_a = zlib.crc32(_raw_bytes(c.raw_a), self.crc_a)
        self.crc_b = zlib.crc32(_raw_bytes(c.raw_b), self.crc_b)
        self.n_nonzero_delta += nnz
        n_zero_b = n - int(np.count_nonzero(b.reshape(-1).numpy() != 0))
        self.n_zero_b += n_zero_b
        if n_zero_b:
            pruned = (b == 0) & (a != 0)
            self.n_pruned += int(pruned.sum())
            pa = a[pruned].double()
            self.sum_a2_pruned += float(torch.dot(pa, pa))
        self._grids(a, b, d, nnz, c.stored_a)
        if 0 < nnz < n and d.dim() == 2 and d.shape[1] > 1:
            self._pattern(c.changed.reshape(d.shape))
        elif nnz:
            rows, cols = (d.shape[0], d.shape[1]) if d.dim() == 2 else (1, n)
            self.active_rows += rows
            self.active_entries += n
            self.pairs_active += rows * (cols - 1) if d.dim() == 2 else 0
        if whole_rows and d.dim() == 2 and d.shape[1] >= QUANT_MIN_COLS and self.sample_rows < QUANT_SAMPLE_ROWS:
            take = b[: QUANT_SAMPLE_ROWS - self.sample_rows]
            self.sample.append(take.clone())
            self.sample_rows += take.shape[0]
        elif not whole_rows:
            self.sampled = False

    def _grids(self, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, nnz: int, stored_a: torch.dtype) -> None:
        """Is B on a float format's grid, and is every change a rounding of A to a neighbour there?"""
        flat_b = b.reshape(-1)
        for name, (dtype, bits, min_exp) in FORMATS.items():
            if not self.on_grid[name]:
                continue
            stored = self.b_dtype == name  # values stored in a format are on its grid: no pass needed
            if not stored and (not _all_on_grid(flat_b[:GRID_PROBE], dtype) or not _all_on_grid(b, dtype)):
                self.on_grid[name] = False
                continue
            # A already on the grid (stored in the format, or tested): no change can be a rounding of it
            if not nnz or stored_a == dtype or _all_on_grid(a, dtype):
                continue
            off = ~_on_grid(a, dtype)  # A had more precision than the format there
            changed = off & (d != 0)
            ac, dc = a[changed], d[changed]
            self.n_rounded[name] += int((dc.abs() <= ulp(ac, bits, min_exp)).sum())

    def _pattern(self, changed: np.ndarray) -> None:
        """Zero pattern inside rows that changed: i.i.d. drops (DARE) give P(00) = P(0)²."""
        n_active = int(np.count_nonzero(changed.any(axis=1)))
        cols = changed.shape[1]
        self.active_rows += n_active
        self.active_entries += n_active * cols
        z = ~changed
        pairs = int(np.count_nonzero(z[:, 1:] & z[:, :-1]))
        inactive = changed.shape[0] - n_active
        self.zero_pairs_active += pairs - inactive * (cols - 1)
        self.pairs_active += n_active * (cols - 1)

    def note_spectrum(self, sigma: torch.Tensor, rows: int, cols: int, norm_b: float,
                      gram_dtype: torch.dtype = torch.float64) -> None:
        """Numerical rank above the rounding floor of B's storage grid, and the deciles of σ.

        The floor is the larger of the storage rounding (numerics.RANK_FLOOR_MARGIN) and the resolution
        of the eigensolver's Gram dtype (numerics.UNRESOLVED_MARGIN)."""
        sigma = sigma.double()
        if sigma.numel() == 0:
            return
        rms_b = norm_b / math.sqrt(max(1, rows * cols))
        energy = float(sigma.square().sum())
        floor = max(
            RANK_FLOOR_MARGIN * self.unit_roundoff * rms_b * (math.sqrt(rows) + math.sqrt(cols)),
            math.sqrt(UNRESOLVED_MARGIN * unit_roundoff(gram_dtype) * energy),
        )
        rank = int((sigma > floor).sum())
        asc = sigma.flip(0)
        qs = torch.quantile(asc, torch.tensor(DECILES, dtype=torch.float64)).tolist()
        out = {"sv_floor": floor, "sv_rank": float(rank), "sv_min": float(asc[0])}
        out.update(dict(zip(DECILE_KEYS, qs, strict=True)))
        if 0 < rank < sigma.numel():
            # Capped finite (a report is JSON, which has no Infinity): huge weights over a zero σ overflow.
            out["sv_cliff"] = min(float(sigma[rank - 1]) / max(float(sigma[rank]), 1e-300), SV_CLIFF_MAX)
        self.spectrum = out

    @property
    def unit_roundoff(self) -> float:
        """u of the coarsest grid holding every entry of B (a fp32 file of bf16 values is bf16)."""
        if self.on_grid["bfloat16"] and self.numel:
            return UNIT_ROUNDOFF["bfloat16"]
        if self.on_grid["float16"] and self.numel:
            return UNIT_ROUNDOFF["float16"]
        return unit_roundoff(self.b_dtype)

    def _quant(self) -> dict[str, float]:
        """ForensicCounters q_* fields: the coarsest granularity on a grid and those tested before it."""
        if not self.sample or not self.sampled or not self.n_nonzero_delta:
            return {}
        x = torch.cat(self.sample)
        cols = x.shape[1]
        unit = unit_roundoff(self.b_dtype)
        out: dict[str, float] = {}
        grans = [("row", cols)] + [(f"g{g}", g) for g in QUANT_GROUPS if g < cols and cols % g == 0]
        for label, g in grans:
            n, on, bits, levels = grid_groups(x.reshape(-1, g), unit)
            out.update(ForensicCounters.quant_fields(label, QuantCounts(n, on, bits, levels, g)))
            if n and on == n:
                break  # the coarsest granularity on a grid wins; finer groups are subsets of it
        return out

    def values(self) -> dict[str, float]:
        """ForensicCounters fields measured by this pass."""
        out: dict[str, float] = {
            "n_nonzero_delta": float(self.n_nonzero_delta),
            "n_zero_b": float(self.n_zero_b),
            "n_pruned": float(self.n_pruned),
            "rms_a_pruned": math.sqrt(self.sum_a2_pruned / self.n_pruned) if self.n_pruned else 0.0,
            "sum_a": self.sum_a,
            "sum_b": self.sum_b,
            "crc_a": float(self.crc_a),
            "crc_b": float(self.crc_b),
            "unit_roundoff_b": self.unit_roundoff,
            "active_rows": float(self.active_rows),
            "active_entries": float(self.active_entries),
            "zero_pairs_active": float(self.zero_pairs_active),
            "pairs_active": float(self.pairs_active),
        }
        for name in FORMATS:
            out.update(ForensicCounters.cast_fields(name, self.on_grid[name] and bool(self.numel),
                                                    self.n_rounded[name]))
        out.update(self._quant())
        out.update(self.spectrum)
        return out
