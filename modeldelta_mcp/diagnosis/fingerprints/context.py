"""What every detector reads: the ModuleDelta rows, the adapter facts, and small helpers over them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modeldelta_mcp.diagnosis import marchenko_pastur
from modeldelta_mcp.facts import AdapterFacts
from modeldelta_mcp.models import Finding, ModuleDelta, QuantGroup
from modeldelta_mcp.numerics import DECILES, LOW_RANK_MAX_FRACTION, RANK_FLOOR_MARGIN, UNIT_ROUNDOFF

ATTN_ROLES = frozenset({"attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv"})
MLP_ROLES = frozenset({"mlp_gate", "mlp_up", "mlp_down", "mlp_gate_up", "router"})
VOCAB_ROLES = frozenset({"embed", "head", "pos_embed"})

# B on a grid at least this coarse (fp16, bf16) carries rounding noise that can hide a low-rank update:
# its rank is read against the noise's measured edge (rank_above_rounding_bulk).
HALF_PRECISION_U = UNIT_ROUNDOFF["float16"]
# The same tolerances as the noise_injection test (spectral.py): bulk deciles within 0.02 + 2/p of MP,
# outliers above edge·(1 + 2·p^(-2/3)).
BULK_QUANTILE_FLOOR = 0.02
BULK_QUANTILE_SLACK = 2.0
BULK_EDGE_SLACK = 2.0


def shape2d(m: ModuleDelta) -> tuple[int, int]:
    """Rows and columns of the compared 2-D view (overlapping rows on a resized vocabulary axis)."""
    rows = m.shape[0] if m.shape else 1
    if m.rows_a is not None and m.rows_b is not None:
        rows = min(m.rows_a, m.rows_b)
    cols = m.n_params // max(1, rows)
    return rows, cols


def is_matrix(m: ModuleDelta) -> bool:
    rows, cols = shape2d(m)
    return len(m.shape) >= 2 and rows > 1 and cols > 1


def is_vector(m: ModuleDelta) -> bool:
    return not is_matrix(m)


def numel(m: ModuleDelta) -> float:
    """Entries compared (the overlap of a resized vocabulary axis)."""
    return m.forensics.numel if m.forensics.numel is not None else float(m.n_params)


def nnz(m: ModuleDelta) -> int:
    """Entries whose delta is not exactly zero."""
    f = m.forensics
    if f.n_nonzero_delta is not None:
        return int(f.n_nonzero_delta)
    return int(numel(m) - (f.n_zero_delta or 0.0))


def numerical_rank(m: ModuleDelta) -> int | None:
    """Rank of Δ above the rounding floor of B's storage grid; None when it cannot be told."""
    f = m.forensics
    if f.masked_rank is not None:  # pruned after the update: the rank on the kept entries
        return int(f.masked_rank)
    if f.unit_roundoff_b is not None and f.unit_roundoff_b >= HALF_PRECISION_U:
        r = rank_above_rounding_bulk(m)
        if r is not None:
            return r
    if f.sv_rank is not None:
        return int(f.sv_rank)
    top = m.top_singular_values or []
    if not top or f.unit_roundoff_b is None:
        return None
    # only the top-k σ are known: the engine's exact-path floor (storage rounding) applied to them
    rows, cols = shape2d(m)
    rms_b = (f.norm_b or 0.0) / math.sqrt(max(1, rows * cols))
    floor = RANK_FLOOR_MARGIN * f.unit_roundoff_b * rms_b * (math.sqrt(rows) + math.sqrt(cols))
    above = sum(1 for s in top if s > floor)
    return above if above < len(top) else None  # every top-k σ is signal: the rank is only >= k


def rank_above_rounding_bulk(m: ModuleDelta) -> int | None:
    """Rank of Δ = low rank + the rounding noise of a half-precision B, read against the noise's own edge.

    The fixed floor (2·u·rms(B)·(√m + √n)) bounds rounding noise from above and can hide a small update
    saved in bf16/fp16. Here the noise level τ is measured from the bulk of σ (its deciles against the
    Marchenko–Pastur law; r ≪ min(m, n) outliers barely move them), must match the bulk's MP shape and be
    no larger than rounding can make it (u·RMS(B)), and the rank is the number of σ above the MP edge plus
    its Tracy–Widom slack. None when that does not apply (no exact spectrum, a bulk that is not rounding
    noise, or every top-k σ above the edge)."""
    deciles = m.forensics.deciles()
    top = m.top_singular_values or []
    if deciles is None or not top:
        return None
    rows, cols = shape2d(m)
    p = min(rows, cols)
    edge1 = marchenko_pastur.edge(rows, cols, 1.0)
    theory = marchenko_pastur.sigma_quantiles(rows, cols, DECILES)
    taus = sorted(d / (t * edge1) for d, t in zip(deciles, theory, strict=True) if t > 0)
    if not taus:
        return None
    tau = taus[len(taus) // 2]
    if tau <= 0:  # most σ exactly zero: an exact low rank, the fixed floor reads it
        return None
    err = max(abs(d / (tau * edge1) - t) for d, t in zip(deciles, theory, strict=True))
    rms_b = (m.forensics.norm_b or 0.0) / math.sqrt(max(1, rows * cols))
    if err > BULK_QUANTILE_FLOOR + BULK_QUANTILE_SLACK / p or tau > (m.forensics.unit_roundoff_b or 0.0) * rms_b:
        return None
    edge = tau * edge1 * (1 + BULK_EDGE_SLACK * p ** (-2 / 3))
    above = sum(1 for s in top if s > edge)
    return above if above < len(top) else None


def is_low_rank(m: ModuleDelta) -> bool | None:
    r = numerical_rank(m)
    if r is None:
        if m.top_singular_values and len(m.top_singular_values) >= min(shape2d(m)) * LOW_RANK_MAX_FRACTION:
            return False
        return None
    return r <= LOW_RANK_MAX_FRACTION * min(shape2d(m))


def rescaled_rank(m: ModuleDelta) -> int | None:
    """Rank of Δ after the per-row rescale of A it needs (a DoRA merge: engine/rescaled_rank.py), else None.

    It overrides the numerical rank: in bf16 the floor hides the rescale's small σ, which then reads as a
    rank of up to min(m, n)/2. Vocabulary matrices are not read this way: their sampled first rows are special
    tokens (an LM head's unseen-token rows move together, a low-rank shift), and PEFT's DoRA scales an
    embedding's columns, not its rows."""
    r = m.forensics.rescaled_rank
    if r is None or m.role in VOCAB_ROLES:
        return None
    return int(r) if 0 < r <= LOW_RANK_MAX_FRACTION * min(shape2d(m)) else None


def layer_template(m: ModuleDelta) -> str | None:
    """The name with its layer index replaced by {} ("encoder.layer.{}.attention.self.query.weight")."""
    if m.layer is None:
        return None
    parts = m.name.split(".")
    idx = str(m.layer)
    for i, p in enumerate(parts):
        if p == idx and i > 0 and not parts[i - 1].isdigit():
            return ".".join([*parts[:i], "{}", *parts[i + 1:]])
    return None


def family(role: str) -> str:
    if role in ATTN_ROLES:
        return "attention"
    if role in MLP_ROLES:
        return "mlp"
    if role in VOCAB_ROLES:
        return "vocab"
    return role


@dataclass
class Context:
    mods: list[ModuleDelta]
    adapter: AdapterFacts | None = None
    quantization: list[QuantGroup] = field(default_factory=list)  # schemes A's and B's files declare
    changed: list[ModuleDelta] = field(init=False)
    changed_matrices: list[ModuleDelta] = field(init=False)

    def __post_init__(self) -> None:
        self.changed = [m for m in self.mods if not m.identical]
        self.changed_matrices = [m for m in self.changed if is_matrix(m)]

    @property
    def matrices(self) -> list[ModuleDelta]:
        return [m for m in self.mods if is_matrix(m)]


def finding(code: str, severity: str, title: str, detail: str, evidence: dict[str, Any],
            metric_value: float | str | None = None) -> Finding:
    return Finding(code=code, category="method", severity=severity, title=title, detail=detail,  # type: ignore[arg-type]
                   metric_value=metric_value, evidence=evidence)


def sorted_roles(mods: list[ModuleDelta]) -> list[str]:
    return sorted({m.role for m in mods})
