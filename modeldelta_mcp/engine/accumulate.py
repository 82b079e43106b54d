"""Per-tensor accumulators, fed chunk by chunk so memory does not grow with the tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

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
    n_zero_a: int = 0
    n_zero_b: int = 0
    n_pruned: int = 0  # zero in B where A was not
    max_abs_delta: float = 0.0
    sum_abs_a_pruned: float = 0.0  # |A| over pruned entries: pruning removes the small ones
    sum_abs_a: float = 0.0
    n_on_fp16_grid: int = 0  # B's entries exactly representable in float16
    n_on_bf16_grid: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Add a chunk (any float dtype, same shape); return the float32 delta of the chunk."""
        a = a.float()
        b = b.float()
        finite = torch.isfinite(a) & torch.isfinite(b)
        bad = int((~finite).sum())
        if bad:
            # NaN/Inf are counted and zeroed so that norms and spectra stay finite (warning finding).
            self.n_nonfinite += bad
            a = torch.where(finite, a, torch.zeros_like(a))
            b = torch.where(finite, b, torch.zeros_like(b))
        d = b - a
        a64, b64 = a.double(), b.double()
        self.numel += a.numel()
        self.sum_a2 += float((a64 * a64).sum())
        self.sum_b2 += float((b64 * b64).sum())
        self.sum_ab += float((a64 * b64).sum())
        self.sum_d2 += float((d.double() ** 2).sum())
        absd = d.abs()
        self.n_small += int((absd < SPARSITY_EPS).sum())
        self.n_zero_delta += int((d == 0).sum())
        if absd.numel():
            self.max_abs_delta = max(self.max_abs_delta, float(absd.max()))
        zero_a, zero_b = a == 0, b == 0
        pruned = zero_b & ~zero_a
        self.n_zero_a += int(zero_a.sum())
        self.n_zero_b += int(zero_b.sum())
        self.n_pruned += int(pruned.sum())
        abs_a = a.abs()
        self.sum_abs_a += float(abs_a.sum(dtype=torch.float64))
        if self.n_pruned:
            self.sum_abs_a_pruned += float(abs_a[pruned].sum(dtype=torch.float64))
        self.n_on_fp16_grid += int((b.half().float() == b).sum())
        self.n_on_bf16_grid += int((b.bfloat16().float() == b).sum())
        return d

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

    def forensics(self) -> dict[str, float]:
        """Counts the diagnosis needs beyond the seed's metrics (kept in the report as evidence)."""
        out = {
            "numel": float(self.numel),
            "n_zero_delta": float(self.n_zero_delta),
            "n_zero_a": float(self.n_zero_a),
            "n_zero_b": float(self.n_zero_b),
            "n_pruned": float(self.n_pruned),
            "mean_abs_a": self.sum_abs_a / max(1, self.numel),
            "mean_abs_a_pruned": self.sum_abs_a_pruned / max(1, self.n_pruned),
            "max_abs_delta": self.max_abs_delta,
            "frac_on_fp16_grid": self.n_on_fp16_grid / max(1, self.numel),
            "frac_on_bf16_grid": self.n_on_bf16_grid / max(1, self.numel),
            "norm_a": self.norm_a,
            "norm_b": self.norm_b,
        }
        out.update(self.extra)
        return out
