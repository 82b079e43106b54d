"""Singular values of a delta from its Gram matrix: exact, streamed, and cheap.

σ² are the eigenvalues of the smaller Gram ΔᵀΔ (or ΔΔᵀ), accumulated in float64 over row (or column)
blocks, so memory is min(m, n)² and not the tensor. Two precisions:

- float64 products and eigensolver: resolves σ down to ~sqrt(eps64)·‖Δ‖_F. Used for near-square
  matrices, where the Gram product is cheap next to the eigensolver and a dense Δ has σ near zero
  (the Marchenko–Pastur hard edge), and as the fallback below.
- float32 products (float64 across blocks) and a float32 eigensolver: about 2x cheaper, for matrices
  at least TALL_RATIO times longer than wide, where products dominate and a dense Δ keeps
  σ_min/σ_max >= (1-1/√2)/(1+1/√2) ≈ 0.17. Its eigenvalues carry an absolute error below
  UNRESOLVED_MARGIN·u32·trace(G) (Weyl's bound on the product rounding plus the backward error of
  the float32 eigensolver; trace(G) = ‖Δ‖_F² is exact). A float32 Gram squares the condition number,
  so the tail of an exactly low-rank delta (a LoRA merge saved in fp32) sits below that floor; when the
  eigenvalues under the floor can move the effective rank or the spectral decay by more than
  SENSITIVITY_TOL, the caller recomputes the spectrum in float64 (`Spectrum.resolved` is False).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from modeldelta_mcp.numerics import UNRESOLVED_MARGIN, unit_roundoff

Precision = Literal["float32", "float64"]

# Seed definitions: normalised σ below this are dropped from the entropy; log-σ fit uses σ above it.
ENTROPY_FLOOR = 1e-12
# Guards Σσ² against zero in the seed's concentration ratio.
ENERGY_EPS = 1e-12
# Long side / short side from which the float32 route pays: products then cost >= 2x the eigensolver
# and a dense delta's smallest σ is far above the float32 floor (Marchenko–Pastur edge, see above).
TALL_RATIO = 2.0
# Relative change of effective rank or spectral alpha that unresolved eigenvalues may cause before the
# float64 recomputation is needed (the seed parity target is 1% on effective rank; 10x margin).
SENSITIVITY_TOL = 1e-3
# Panels for the symmetric product: only the upper triangle is computed, (p+1)/(2p) of a full GEMM.
GRAM_PANELS = 8
# Panels narrower than this lose more to call overhead than they save in flops.
MIN_PANEL = 128
# Products below this many flops run on one thread: waking a second one costs more (measured 40x slower
# for a 16x64 block on a loaded 2-core machine, where the second thread waits for a time slice).
SINGLE_THREAD_FLOPS = 5e7
# Rows (or columns) converted to float64 at a time on the float64 route: bounded temporaries
# (7 MB for a 3584-wide matrix) and still long enough for an efficient product.
F64_CHUNK = 256


def route_for(rows: int, cols: int) -> Precision:
    long_side, short_side = max(rows, cols), min(rows, cols)
    return "float32" if long_side >= TALL_RATIO * short_side else "float64"


class GramAccumulator:
    """Accumulates the upper triangle of ΔᵀΔ over row blocks (tall) or of ΔΔᵀ over column blocks (wide)."""

    def __init__(self, size: int, transpose: bool, device: torch.device, precision: Precision = "float64") -> None:
        self.size = size
        self.transpose = transpose  # True: Gram of rows (ΔΔᵀ), fed column blocks
        self.precision: Precision = precision
        self.device = device
        self.gram = torch.zeros(size, size, dtype=torch.float64, device=device)

    @property
    def nbytes(self) -> int:
        return self.size * self.size * 8

    def add(self, block: torch.Tensor) -> None:
        d = block.to(device=self.device)
        if self.transpose:
            d = d.T  # ΔΔᵀ of a column block is (Δᵀ)ᵀ(Δᵀ): the same product on the transposed view
        if self.precision == "float32":
            self._panels(d.float(), self.gram)
        else:
            for r in range(0, d.shape[0], F64_CHUNK):
                self._panels(d[r : r + F64_CHUNK].double(), self.gram)

    @staticmethod
    def _panels(d: torch.Tensor, out: torch.Tensor) -> None:
        """out[upper] += (dᵀd)[upper], panel by panel (the lower triangle of `out` stays partial)."""
        k, n = d.shape
        w = max(MIN_PANEL, -(-n // GRAM_PANELS))
        with _threads(1 if d.device.type == "cpu" and k * n * n < SINGLE_THREAD_FLOPS else None):
            for i in range(0, n, w):
                prod = d[:, i : i + w].T @ d[:, i:]
                out[i : i + w, i:] += prod if prod.dtype == out.dtype else prod.double()

    def finish(self) -> tuple[torch.Tensor, float]:
        """(Gram in the eigensolver's dtype, its trace) and frees the accumulator."""
        g, self.gram = self.gram, torch.empty(0)
        trace = float(g.diagonal().sum())
        return (g.float() if self.precision == "float32" else g), trace

    def singular_values(self) -> torch.Tensor:
        """All singular values, descending, float64 on the CPU (no resolution test: see Spectrum)."""
        g, _ = self.finish()
        return torch.linalg.eigvalsh(g, UPLO="U").double().clamp_min_(0).sqrt_().flip(0).cpu()


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Torch threads of the calling thread set to n for the block (None: unchanged)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def eigvals_batch(grams: list[torch.Tensor]) -> list[torch.Tensor]:
    """Eigenvalues (ascending, float64 on the CPU) of upper-triangle Grams; same shapes go as one batch."""
    out: list[torch.Tensor | None] = [None] * len(grams)
    groups: dict[tuple, list[int]] = {}
    for i, g in enumerate(grams):
        groups.setdefault((tuple(g.shape), g.dtype, g.device), []).append(i)
    for idx in groups.values():
        batch = grams[idx[0]].unsqueeze(0) if len(idx) == 1 else torch.stack([grams[i] for i in idx])
        try:
            ev = torch.linalg.eigvalsh(batch, UPLO="U").double().cpu()
        except torch.linalg.LinAlgError:  # a float32 Gram overflowed (huge weights): NaN asks for float64
            ev = torch.full(batch.shape[:2], math.nan, dtype=torch.float64)
        for j, i in enumerate(idx):
            out[i] = ev[j]
    return [e for e in out if e is not None]


@dataclass
class Spectrum:
    sigma: torch.Tensor  # all singular values, descending, float64
    resolved: bool  # False: eigenvalues under the floor could move the metrics; recompute in float64
    n_unresolved: int


def spectrum_from_eigs(evals: torch.Tensor, trace: float, dtype: torch.dtype) -> Spectrum:
    """σ from Gram eigenvalues, with the test of whether the eigenvalues below the rounding floor matter."""
    lam = evals.double().flip(0)
    if not (math.isfinite(trace) and bool(torch.isfinite(lam).all())):  # overflowed: recompute in float64
        return Spectrum(lam.nan_to_num(0.0).clamp_min(0).sqrt(), False, len(lam))
    floor = UNRESOLVED_MARGIN * unit_roundoff(dtype) * max(trace, 0.0)
    sigma = lam.clamp_min(0).sqrt()
    low = lam < floor
    n_low = int(low.sum())
    if n_low == 0 or dtype == torch.float64:
        return Spectrum(sigma, True, n_low)
    lo = torch.where(low, (lam - floor).clamp_min(0).sqrt(), sigma)
    hi = torch.where(low, (lam + floor).clamp_min(0).sqrt(), sigma)
    hi, _ = torch.sort(hi, descending=True)
    resolved = _close(effective_rank(lo), effective_rank(hi)) and _close(spectral_alpha(lo), spectral_alpha(hi))
    return Spectrum(sigma, resolved, n_low)


def _close(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is None and y is None
    return abs(x - y) <= SENSITIVITY_TOL * max(abs(x), abs(y), 1e-30)


@dataclass
class SpectrumStats:
    effective_rank: float
    stable_rank: float
    concentration_top_k: float
    top_k: int
    top_singular_values: list[float]
    spectral_alpha: float | None
    n_singular_values: int


def effective_rank(sigma: torch.Tensor) -> float:
    total = float(sigma.sum())
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > ENTROPY_FLOOR]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def spectral_alpha(sigma: torch.Tensor) -> float | None:
    """−slope of log σ against log rank (least squares), the seed's spectral decay."""
    s = sigma[sigma > ENTROPY_FLOOR].double()
    if s.numel() <= 2:
        return None
    x = torch.log(torch.arange(1, s.numel() + 1, dtype=torch.float64))
    y = torch.log(s)
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return -slope if math.isfinite(slope) else None


def summarize(sigma: torch.Tensor, top_k: int) -> SpectrumStats:
    sigma = sigma.double()
    k = min(top_k, sigma.numel())
    sq = sigma * sigma
    total = float(sq.sum())
    s1 = float(sigma[0]) if sigma.numel() else 0.0
    stable = total / (s1 * s1) if s1 > 0 else 0.0
    alpha = spectral_alpha(sigma)
    return SpectrumStats(
        effective_rank=effective_rank(sigma),
        stable_rank=stable,
        concentration_top_k=float(sq[:k].sum()) / (total + ENERGY_EPS),
        top_k=k,
        top_singular_values=[float(v) for v in sigma[:k]],
        spectral_alpha=alpha,
        n_singular_values=int(sigma.numel()),
    )
