"""Per-tensor accumulators, fed chunk by chunk so memory does not grow with the tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from modeldelta_mcp.engine.forensics import Chunk, Forensics
from modeldelta_mcp.models import ForensicCounters

# The seed's definition: an entry counts as unchanged when |ΔW| < 1e-5.
SPARSITY_EPS = 1e-5
# torch.nn.functional.cosine_similarity's default eps (the seed used it).
COSINE_EPS = 1e-8
# Guards the seed's ratio ‖Δ‖/‖W_a‖ against an all-zero W_a, as the seed does.
REL_EPS = 1e-12


@dataclass
class DeltaAccumulator:
    """Sums over the entries of one tensor pair; all in float64."""

    numel: int = 0
    sum_a2: float = 0.0
    sum_b2: float = 0.0
    sum_ab: float = 0.0
    sum_d2: float = 0.0
    n_small: int = 0
    n_zero_delta: int = 0
    n_nonfinite: int = 0
    max_abs_delta: float = 0.0
    forensic: Forensics = field(default_factory=Forensics)

    def add(self, a: torch.Tensor, b: torch.Tensor, whole_rows: bool = True) -> torch.Tensor:
        """Add a chunk (stored dtypes, same shape); return the float32 delta of the chunk.

        `whole_rows` is False when the chunk is a column block (a row-wise test cannot run on it).
        Sums are float64; counts and comparisons run in numpy, whose vectorized compares and boolean
        counts are 3-10x faster than torch's on CPU (measured per 256K-entry chunk, docs/engine.md).
        """
        raw_a, raw_b = a, b
        a = a.float().contiguous()
        b = b.float().contiguous()
        # float64 straight from the stored dtype: exact, and one conversion pass instead of two
        a64, b64 = raw_a.double().reshape(-1), raw_b.double().reshape(-1)
        sa2, sb2 = float(torch.dot(a64, a64)), float(torch.dot(b64, b64))
        if not math.isfinite(sa2 + sb2):  # squares of float32 never overflow float64: a NaN/Inf is present
            finite = torch.isfinite(a) & torch.isfinite(b)
            # NaN/Inf are counted and zeroed so that norms and spectra stay finite (warning finding).
            self.n_nonfinite += int((~finite).sum())
            a = torch.where(finite, a, torch.zeros_like(a))
            b = torch.where(finite, b, torch.zeros_like(b))
            a64, b64 = a.double().reshape(-1), b.double().reshape(-1)
            sa2, sb2 = float(torch.dot(a64, a64)), float(torch.dot(b64, b64))
        d = b - a
        # ΔW in float64 from the float32 difference: exact for bf16/fp16 sources (their difference fits
        # float32's significand), within 2^-24 per entry for float32 ones (the seed's own precision).
        d64 = d.double().reshape(-1)
        self.numel += a.numel()
        self.sum_a2 += sa2
        self.sum_b2 += sb2
        sd2 = float(torch.dot(d64, d64))
        if not math.isfinite(sd2):  # B − A overflowed float32 (entries near ±3.4e38): counted and zeroed too
            over = ~torch.isfinite(d)
            self.n_nonfinite += int(over.sum())
            d = torch.where(over, torch.zeros_like(d), d)
            d64 = d.double().reshape(-1)
            sd2 = float(torch.dot(d64, d64))
        self.sum_d2 += sd2
        # 2·a·b = a² + b² − (b − a)²: one dot fewer; the rounding is ~1e-16 of ‖A‖² (cosine error ~1e-16)
        self.sum_ab += 0.5 * (sa2 + sb2 - sd2)
        dn = d.reshape(-1).numpy()
        ad = np.abs(dn)
        # float32 compare, as the seed's float32 `|ΔW| < 1e-5`
        self.n_small += int(np.count_nonzero(ad < np.float32(SPARSITY_EPS)))
        changed = dn != 0
        nnz = int(np.count_nonzero(changed))
        self.n_zero_delta += dn.size - nnz
        if dn.size:
            self.max_abs_delta = max(self.max_abs_delta, float(ad.max()))
        self.forensic.update(Chunk(a, b, d, raw_a.dtype, raw_b.dtype, changed, nnz,
                                   (float(a64.sum()), float(b64.sum())), raw_a, raw_b), whole_rows)
        return d

    def note_spectrum(self, sigma: torch.Tensor, rows: int, cols: int,
                      gram_dtype: torch.dtype = torch.float64) -> None:
        """Record the spectrum's forensic values (numerical rank, deciles); σ descending, from a Gram
        solved in `gram_dtype` (its rounding floor bounds the σ that can be told from zero)."""
        self.forensic.note_spectrum(sigma, rows, cols, self.norm_b, gram_dtype)

    @property
    def norm_a(self) -> float:
        return math.sqrt(self.sum_a2)

    @property
    def norm_b(self) -> float:
        return math.sqrt(self.sum_b2)

    @property
    def frob(self) -> float:
        return math.sqrt(self.sum_d2)

    @property
    def frob_relative(self) -> float:
        return self.frob / (self.norm_a + REL_EPS)

    @property
    def cosine(self) -> float:
        denom = max(self.norm_a, COSINE_EPS) * max(self.norm_b, COSINE_EPS)
        return max(-1.0, min(1.0, self.sum_ab / denom))

    @property
    def sparsity(self) -> float:
        return self.n_small / max(1, self.numel)

    @property
    def identical(self) -> bool:
        return self.n_zero_delta == self.numel and self.n_nonfinite == 0

    def forensics(self) -> ForensicCounters:
        """Counts the diagnosis needs beyond the seed's metrics (kept in the report as evidence)."""
        return ForensicCounters(numel=float(self.numel), n_zero_delta=float(self.n_zero_delta),
                                max_abs_delta=self.max_abs_delta, norm_a=self.norm_a, norm_b=self.norm_b,
                                **self.forensic.values())
