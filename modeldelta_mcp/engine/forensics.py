"""Forensic counters per tensor pair, fed chunk by chunk next to the seed's metrics.

They are the evidence the method fingerprints (diagnosis/fingerprints/, docs/diagnosis.md) rest on:
float-format grids (precision casts), k-bit grids on a bounded sample of B's rows (quantization),
exact zeros and their pattern (pruning, DARE), exact-copy fingerprints (layer copies), the sums a
permutation null needs (unrelated models) and, from the full spectrum, the numerical rank above the
storage dtype's rounding floor and the deciles of σ (LoRA, Marchenko–Pastur), and on the sampled rows
the rank left after a per-row rescale (DoRA). Memory is bounded: scalars per tensor plus the first
rescaled_rank.SAMPLE_ROWS rows of A and B.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from modeldelta_mcp.engine import rescaled_rank as rescaled
from modeldelta_mcp.engine.masked_rank import masked_rank
from modeldelta_mcp.engine.quant_fit import GridFit, UniformResult, fit_quantizer
from modeldelta_mcp.models import ForensicCounters, QuantCounts, QuantGrid
from modeldelta_mcp.numerics import (
    CAST_FORMATS,
    DECILE_KEYS,
    DECILES,
    LOW_RANK_MAX_FRACTION,
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
# Entries of A probed (strided over the chunk) for exact zeros before A's zeros are counted: trained
# weights have none, a pruned A has >= 1% and shows them in the probe.
ZERO_PROBE = 1024
# Pruning patterns: semi-structured N:M groups along the input dimension.
NM_PATTERNS = ((2, 4), (4, 8))
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


def _side_on_grid(x: torch.Tensor, stored: torch.dtype, dtype: torch.dtype) -> bool:
    """Values stored in a format are on its grid (no pass); others are probed first, then tested."""
    if stored == dtype:
        return True
    flat = x.reshape(-1)
    return _all_on_grid(flat[:GRID_PROBE], dtype) and _all_on_grid(x, dtype)


class _PrunePattern:
    """Where B's new zeros sit (only tensors with zeros where A had none pay for this)."""

    def __init__(self) -> None:
        self.nm = {nm: [0, 0] for nm in NM_PATTERNS}  # groups of M with >= N new zeros, groups tested
        self.zero_rows: list[int] = []  # rows entirely zero in B (and not in A)
        self.col_zero: np.ndarray | None = None  # columns zero in every row so far
        self.row = 0
        self.cols_valid = True

    def update(self, pruned: np.ndarray, b_zero: np.ndarray, whole_rows: bool) -> None:
        rows, cols = pruned.shape
        for n, m in NM_PATTERNS:
            if cols % m == 0:
                groups = pruned.reshape(rows, cols // m, m).sum(axis=2)
                self.nm[(n, m)][0] += int(np.count_nonzero(groups >= n))
                self.nm[(n, m)][1] += groups.size
        if whole_rows:
            full = np.flatnonzero(b_zero.all(axis=1) & pruned.any(axis=1))
            self.zero_rows.extend(int(r) + self.row for r in full)
            cz: np.ndarray = np.asarray(b_zero.all(axis=0))
            self.col_zero = cz if self.col_zero is None else self.col_zero & cz
        else:
            self.cols_valid = False

    def advance(self, rows: int) -> None:
        self.row += rows

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        hit, tested = self.nm[(2, 4)]
        if tested:
            out["nm_2_4_share"] = hit / tested
        hit, tested = self.nm[(4, 8)]
        if tested:
            out["nm_4_8_share"] = hit / tested
        out["zero_rows_b"] = float(len(self.zero_rows))
        out["zero_row_runs"] = float(_runs(self.zero_rows))
        if self.cols_valid and self.col_zero is not None:
            cols = np.flatnonzero(self.col_zero).tolist()
            out["zero_cols_b"] = float(len(cols))
            out["zero_col_runs"] = float(_runs(cols))
        return out


def _runs(idx: list[int]) -> int:
    """Maximal runs of consecutive indices."""
    return sum(1 for i, x in enumerate(idx) if i == 0 or x != idx[i - 1] + 1)


def _grid_counts(fit: GridFit | None, value_range: list[float] | None) -> QuantGrid | None:
    if fit is None:
        return None
    bits = fit.bits
    if fit.step and value_range is not None:  # one step for the whole tensor: its range sets the levels
        lo, hi = value_range
        bits = max(bits, math.ceil(math.log2(round((hi - lo) / fit.step) + 1)))
    return QuantGrid(number_format=fit.number_format, granularity=fit.granularity, group_size=fit.group_size,
                     bits=bits, n_groups=fit.n_groups, evidence_bits=round(fit.evidence_bits, 1),
                     misses=fit.misses, levels=fit.levels)


class Forensics:
    """Forensic sums of one tensor pair; update() per chunk with the float32 a, b and delta d.

    Most counters are kept for both sides, so that the diagnosis can also read A as derived from B
    (direction): grids and casts, zeros, the quantizer sample.
    """

    def __init__(self) -> None:
        self.numel = 0
        self.n_nonzero_delta = 0
        self.n_zero_b = 0
        self.n_pruned = 0
        self.sum_a2_pruned = 0.0
        self.n_zero_a = 0
        self.n_pruned_a = 0  # zeros in A where B is not zero (A pruned from B)
        self.sum_b2_pruned_a = 0.0
        self.zeros_a_seen = False
        self.sum_a = 0.0
        self.sum_b = 0.0
        self.crc_a = 0
        self.crc_b = 0
        self.a_dtype = "float32"
        self.b_dtype = "float32"
        self.on_grid = {f: True for f in FORMATS}  # every entry of B so far on that format's grid
        self.on_grid_a = {f: True for f in FORMATS}
        self.n_rounded = {f: 0 for f in FORMATS}  # changed entries that are a one-ULP rounding of A
        self.n_rounded_a = {f: 0 for f in FORMATS}  # ... of B (A cast from B)
        self.active_rows = 0  # chunk rows with any change
        self.active_entries = 0
        self.zero_pairs_active = 0  # horizontally adjacent unchanged entries inside active rows
        self.pairs_active = 0
        self.sample: list[torch.Tensor] = []
        self.sample_a: list[torch.Tensor] = []
        self.sample_rows = 0
        self.sampled = True  # False once a chunk did not hold whole rows
        # rows after the quantizer's sample, up to rescaled_rank.SAMPLE_ROWS (the rescaled-rank test reads both)
        self.more: list[torch.Tensor] = []
        self.more_a: list[torch.Tensor] = []
        self.rows_seen = 0  # rows of the whole-row chunks so far
        self.shape2d: tuple[int, int] | None = None  # rows and columns of the spectrum's 2-D view
        self.prune: _PrunePattern | None = None
        # quantizer fits, made when the sample is complete; a per-tensor grid then needs the tensor's range
        self.fits: tuple[GridFit | None, GridFit | None, dict[str, UniformResult]] | None = None
        self.range_b: list[float] | None = None
        self.range_a: list[float] | None = None
        self.spectrum: dict[str, float] = {}  # ForensicCounters sv_* fields

    def update(self, c: Chunk, whole_rows: bool) -> None:
        a, b, d = c.a, c.b, c.d
        n = d.numel()
        nnz = c.nnz
        self.numel += n
        self.a_dtype = str(c.stored_a).removeprefix("torch.")
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
            b_zero = b == 0
            pruned = b_zero & (a != 0)
            k = int(pruned.sum())
            self.n_pruned += k
            pa = a[pruned].double()
            self.sum_a2_pruned += float(torch.dot(pa, pa))
            if k and d.dim() == 2:
                if self.prune is None:
                    self.prune = _PrunePattern()
                self.prune.update(pruned.numpy(), b_zero.numpy(), whole_rows)
        if nnz:
            self._zeros_a(a, b, n)
        if self.prune is not None and d.dim() == 2:
            self.prune.advance(d.shape[0])
        self._grids(a, b, d, nnz, c.stored_a, c.stored_b)
        if 0 < nnz < n and d.dim() == 2 and d.shape[1] > 1:
            self._pattern(c.changed.reshape(d.shape))
        elif nnz:
            rows, cols = (d.shape[0], d.shape[1]) if d.dim() == 2 else (1, n)
            self.active_rows += rows
            self.active_entries += n
            self.pairs_active += rows * (cols - 1) if d.dim() == 2 else 0
        if whole_rows and d.dim() == 2 and d.shape[1] >= QUANT_MIN_COLS and self.sample_rows < QUANT_SAMPLE_ROWS:
            take = QUANT_SAMPLE_ROWS - self.sample_rows
            self.sample.append(b[:take].clone())
            self.sample_a.append(a[:take].clone())
            self.sample_rows += min(take, b.shape[0])
            if self.sample_rows >= QUANT_SAMPLE_ROWS and nnz:
                self._fit_sample()
        elif not whole_rows:
            self.sampled = False
        if whole_rows and d.dim() == 2 and d.shape[1] >= QUANT_MIN_COLS:
            self._sample_more(a, b)
        if self.range_b is not None:
            self.range_b = [min(self.range_b[0], float(b.min())), max(self.range_b[1], float(b.max()))]
        if self.range_a is not None:
            self.range_a = [min(self.range_a[0], float(a.min())), max(self.range_a[1], float(a.max()))]

    def _sample_more(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Rows QUANT_SAMPLE_ROWS .. rescaled_rank.SAMPLE_ROWS of the tensor (the quantizer's sample: the first)."""
        start = max(QUANT_SAMPLE_ROWS - self.rows_seen, 0)
        stop = min(rescaled.SAMPLE_ROWS - self.rows_seen, b.shape[0])
        if start < stop:
            self.more.append(b[start:stop].clone())
            self.more_a.append(a[start:stop].clone())
        self.rows_seen += b.shape[0]

    def _fit_sample(self) -> None:
        """Quantizer grids of the sampled rows of B and A; a per-tensor grid's bits need the tensor's range,
        tracked from here on (the sample holds every row of the chunks before this one)."""
        fit_b, legacy = fit_quantizer(torch.cat(self.sample), self.unit_roundoff)
        fit_a, _ = fit_quantizer(torch.cat(self.sample_a), self.unit_roundoff_a)
        self.fits = (fit_b, fit_a, legacy)
        for fit, sample, side in ((fit_b, self.sample, "b"), (fit_a, self.sample_a, "a")):
            if fit is not None and fit.step is not None:
                x = torch.cat(sample)
                setattr(self, f"range_{side}", [float(x.min()), float(x.max())])

    def _zeros_a(self, a: torch.Tensor, b: torch.Tensor, n: int) -> None:
        """Zeros of A where B is not zero (A pruned from B); counted once a strided probe shows zeros."""
        flat = a.reshape(-1).numpy()
        if not self.zeros_a_seen:
            probe = flat[:: max(1, n // ZERO_PROBE)]
            if np.count_nonzero(probe) == probe.size:
                return
            self.zeros_a_seen = True
        a_zero = flat == 0
        self.n_zero_a += int(np.count_nonzero(a_zero))
        pruned = a_zero & (b.reshape(-1).numpy() != 0)
        pb = b.reshape(-1)[torch.from_numpy(pruned)].double()
        self.n_pruned_a += int(pruned.sum())
        self.sum_b2_pruned_a += float(torch.dot(pb, pb))

    def _grids(self, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, nnz: int, stored_a: torch.dtype,
               stored_b: torch.dtype) -> None:
        """Is each side on a float format's grid, and is every change a rounding of the other side to a
        neighbour there (B cast from A, or A cast from B)?"""
        for name, (dtype, bits, min_exp) in FORMATS.items():
            b_on = self.on_grid[name] = self.on_grid[name] and _side_on_grid(b, stored_b, dtype)
            a_on = self.on_grid_a[name] = self.on_grid_a[name] and _side_on_grid(a, stored_a, dtype)
            if not nnz or a_on == b_on:  # both on the grid: no change can be a rounding onto it
                continue
            src, dst, counts = (a, b, self.n_rounded) if b_on else (b, a, self.n_rounded_a)
            off = ~_on_grid(src, dtype)  # the source had more precision than the format there
            changed = off & (d != 0)
            counts[name] += int(((dst - src)[changed].abs() <= ulp(src[changed], bits, min_exp)).sum())

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
        self.shape2d = (rows, cols)
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
        return self._roundoff(self.on_grid, self.b_dtype)

    @property
    def unit_roundoff_a(self) -> float:
        return self._roundoff(self.on_grid_a, self.a_dtype)

    def _roundoff(self, on_grid: dict[str, bool], dtype: str) -> float:
        if on_grid["bfloat16"] and self.numel:
            return UNIT_ROUNDOFF["bfloat16"]
        if on_grid["float16"] and self.numel:
            return UNIT_ROUNDOFF["float16"]
        return unit_roundoff(dtype)

    def _quant(self) -> dict:
        """The quantizer grids of B's and A's sampled rows (QuantGrid), and the q_<label>_* counters of B."""
        if not self.sample or not self.sampled or not self.n_nonzero_delta:
            return {}
        if self.fits is None:
            self._fit_sample()
        assert self.fits is not None
        fit_b, fit_a, legacy = self.fits
        out: dict = {"quant_b": _grid_counts(fit_b, self.range_b), "quant_a": _grid_counts(fit_a, self.range_a)}
        for label, r in legacy.items():
            out.update(ForensicCounters.quant_fields(label, QuantCounts(r.tested, r.on_grid, r.bits, r.levels, r.size)))
        return out

    def values(self) -> dict:
        """ForensicCounters fields measured by this pass."""
        out: dict = {
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
        # A's side (direction): only where it says something beyond B's
        out["unit_roundoff_a"] = self.unit_roundoff_a
        out.update(ForensicCounters.cast_fields_a(self.on_grid_a["float16"] and bool(self.numel),
                                                  self.on_grid_a["bfloat16"] and bool(self.numel),
                                                  self.n_rounded_a["float16"], self.n_rounded_a["bfloat16"]))
        if self.zeros_a_seen:
            out["n_zero_a"] = float(self.n_zero_a)
            out["n_pruned_a"] = float(self.n_pruned_a)
            out["rms_b_pruned_a"] = math.sqrt(self.sum_b2_pruned_a / self.n_pruned_a) if self.n_pruned_a else 0.0
        if self.prune is not None:
            out.update(self.prune.values())
            # On a quantizer's grid, new zeros are its zero level, not pruning (the diagnosis leaves quantized
            # tensors out of it): no update to recover on kept entries, and the fit would only fail, slowly.
            rank = self._masked_rank() if out.get("quant_b") is None else None
            if rank is not None:
                out["masked_rank"] = float(rank)
        if self._rescale_flagged():
            rank = self._rescaled_rank()
            if rank is not None:
                out["rescaled_rank"] = float(rank)
        return out

    def _masked_rank(self) -> int | None:
        """Rank of the update on the entries pruning kept (flag: new zeros plus changes beyond them)."""
        if self.n_nonzero_delta <= self.n_pruned or not self.sample or not self.sampled:
            return None
        b = torch.cat(self.sample).double()
        a = torch.cat(self.sample_a).double()
        rms_b = float((b * b).mean().sqrt())
        return masked_rank(b - a, b != 0, self.unit_roundoff, rms_b)

    def _rescale_flagged(self) -> bool:
        """The cheap flag for the rescaled-rank test: a changed matrix sampled in whole rows, not pruned (that is
        masked_rank's), not on a quantizer's grid, and whose delta is not already low rank (sv_rank, sv_cliff)."""
        if not self.n_nonzero_delta or self.n_pruned or not self.sample or not self.sampled:
            return False
        if self.fits is not None and self.fits[0] is not None:
            return False
        rank, cliff = self.spectrum.get("sv_rank"), self.spectrum.get("sv_cliff")
        if rank is not None and cliff is not None and self.shape2d is not None:
            # low rank with a clean cliff: nothing hidden under the floor (in bf16 a DoRA's rescale can be)
            return not (rank <= LOW_RANK_MAX_FRACTION * min(self.shape2d) and cliff >= rescaled.MIN_CLIFF)
        return True

    def _rescaled_rank(self) -> int | None:
        """Rank of the update after a per-row rescale of A (a DoRA merge), on the sampled rows."""
        b = torch.cat(self.sample + self.more).double()
        a = torch.cat(self.sample_a + self.more_a).double()
        rms_b = float((b * b).mean().sqrt())
        return rescaled.rescaled_rank(a, b - a, self.unit_roundoff, rms_b)
