"""What every detector reads: the ModuleDelta rows, the adapter facts, and small helpers over them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modeldelta_mcp.facts import AdapterFacts
from modeldelta_mcp.models import Finding, ModuleDelta, QuantGroup
from modeldelta_mcp.numerics import RANK_FLOOR_MARGIN

ATTN_ROLES = frozenset({"attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv"})
MLP_ROLES = frozenset({"mlp_gate", "mlp_up", "mlp_down", "mlp_gate_up", "router"})
VOCAB_ROLES = frozenset({"embed", "head", "pos_embed"})

# A delta of numerical rank at most this fraction of min(m, n) is "low rank": LoRA's r is chosen far
# below the dimension (at r >= min(m, n)/2 a factorised update saves nothing), and a trained dense
# update is numerically full rank. The same line splits lora_merge from full_finetune.
LOW_RANK_MAX_FRACTION = 0.5


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


def is_low_rank(m: ModuleDelta) -> bool | None:
    r = numerical_rank(m)
    if r is None:
        if m.top_singular_values and len(m.top_singular_values) >= min(shape2d(m)) * LOW_RANK_MAX_FRACTION:
            return False
        return None
    return r <= LOW_RANK_MAX_FRACTION * min(shape2d(m))


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
