"""Figures every rendering shares, derived from a ComparisonReport (pure functions, no I/O, no plotting)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from modeldelta_mcp.models import ComparisonReport, ModuleDelta

# Display order of roles: input side to output side, then the rest.
ROLE_ORDER = [
    "embed", "pos_embed", "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o", "mlp_gate", "mlp_up",
    "mlp_gate_up", "mlp_down", "router", "norm", "head", "pooler", "other",
]
# The four layer × role metrics (LayerRoleMetrics fields) with their display titles.
HEATMAP_METRICS: dict[str, str] = {
    "frob_norm_relative": "Relative change ‖ΔW‖/‖W‖",
    "cosine_sim": "Cosine similarity of W_a and W_b",
    "effective_rank": "Effective rank of ΔW",
    "concentration_top_k": "Top-k concentration of ΔW",
}
# A "rank cliff" read from the top-k singular values: an adjacent ratio σ_i/σ_{i+1} this large. Trained
# dense updates decay smoothly (adjacent ratios below ~2); an exactly low-rank delta drops to the rounding
# floor, many orders of magnitude below its last real singular value.
CLIFF_RATIO = 100.0
# A "knee": a drop well above the spectrum's usual step, yet no cliff — a low-rank component on top of a
# dense update (a LoRA followed by full training, a planted low-rank part). The adjacent ratio must reach
# KNEE_MIN_RATIO and its log must be KNEE_STEP_FACTOR times the median log step of the top-k values
# (smooth trained spectra step by 1.02-1.15; a planted part stands out by 2x or more).
KNEE_MIN_RATIO = 1.5
KNEE_STEP_FACTOR = 8.0


def role_key(role: str) -> int:
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)


def profile_modules(report: ComparisonReport) -> list[ModuleDelta]:
    """The seed's module set (>= 1000 parameters), most changed first; every module when none qualifies."""
    mods = [m for m in report.modules if m.in_profile] or list(report.modules)
    return sorted(mods, key=lambda m: m.frob_norm_relative, reverse=True)


def layer_roles(report: ComparisonReport, matrices_only: bool = False) -> list[str]:
    """Roles present in the per-layer rows, in display order. `matrices_only` drops vector roles (norm scales:
    no spectrum, and a scale of change of their own that would flatten a shared colour scale)."""
    roles = {r for row in report.layers for r in row.roles}
    if matrices_only:
        roles &= {m.role for m in report.modules if m.layer is not None and len(m.shape) >= 2}
    return sorted(roles, key=role_key)


def heatmap(report: ComparisonReport, metric: str) -> tuple[list[int], list[str], list[list[float | None]]]:
    """(layers, roles, values[role][layer]) of the weight matrices for one LayerRoleMetrics field; None where a
    layer lacks the role."""
    layers = [row.layer for row in report.layers]
    roles = layer_roles(report, matrices_only=True)
    values: list[list[float | None]] = []
    for role in roles:
        line: list[float | None] = []
        for row in report.layers:
            cell = row.roles.get(role)
            line.append(None if cell is None else getattr(cell, metric))
        values.append(line)
    return layers, roles, values


@dataclass(frozen=True)
class LayerDrift:
    layer: int
    delta_norm: float  # ‖ΔW‖_F of the whole layer (every tensor in it)
    relative: float  # that over ‖W_a‖_F of the layer
    n_tensors: int
    n_changed: int

    @property
    def frozen(self) -> bool:
        return self.n_changed == 0


def _norm_a(m: ModuleDelta) -> float | None:
    if m.forensics.norm_a is not None:
        return m.forensics.norm_a
    if m.frob_norm_relative > 0:
        return m.frob_norm / m.frob_norm_relative
    return None


def layer_drift(report: ComparisonReport) -> list[LayerDrift]:
    """Per-layer ‖ΔW‖ and relative change over every tensor of the layer (norms add in quadrature)."""
    acc: dict[int, list[float]] = {}
    for m in report.modules:
        if m.layer is None:
            continue
        d2, a2, n, changed = acc.setdefault(m.layer, [0.0, 0.0, 0, 0])
        norm_a = _norm_a(m)
        acc[m.layer] = [d2 + m.frob_norm**2, a2 + (norm_a or 0.0) ** 2, n + 1, changed + (not m.identical)]
    out = []
    for layer in sorted(acc):
        d2, a2, n, changed = acc[layer]
        out.append(LayerDrift(layer, math.sqrt(d2), math.sqrt(d2 / a2) if a2 > 0 else 0.0, int(n), int(changed)))
    return out


@dataclass(frozen=True)
class Spectrum:
    module: ModuleDelta
    values: list[float]  # the top singular values, zeros dropped (log axes)
    cliff_rank: int | None  # σ_r is the last value above the cliff
    cliff_ratio: float | None
    knee_rank: int | None = None  # σ_r is the last value above a knee (only when there is no cliff)
    knee_ratio: float | None = None


def rank_cliff(m: ModuleDelta) -> tuple[int | None, float | None]:
    """(rank, σ_r/σ_{r+1}) where the spectrum drops off a cliff, or (None, None).

    The engine's exact numerical rank (`sv_rank`, `sv_cliff` forensics) wins when it lies inside the plotted
    top-k; otherwise the largest adjacent ratio of the top-k values, when it reaches CLIFF_RATIO.
    """
    sv = m.top_singular_values or []
    rank, cliff = m.forensics.sv_rank, m.forensics.sv_cliff
    if rank is not None and cliff is not None and 0 < rank < len(sv) and cliff >= CLIFF_RATIO:
        return int(rank), float(cliff)
    best: tuple[int | None, float | None] = (None, None)
    for i in range(len(sv) - 1):
        if sv[i] <= 0:
            break
        ratio = sv[i] / sv[i + 1] if sv[i + 1] > 0 else math.inf
        if ratio >= CLIFF_RATIO and (best[1] is None or ratio > best[1]):
            best = (i + 1, ratio)
    return best


def spectral_knee(values: list[float]) -> tuple[int | None, float | None]:
    """(rank, σ_r/σ_{r+1}) of the largest step from rank 2 on that stands out of a smooth decay, or (None, None)."""
    steps = [math.log(values[i] / values[i + 1]) for i in range(len(values) - 1) if values[i + 1] > 0]
    if len(steps) < 4:
        return None, None
    typical = sorted(steps)[len(steps) // 2]
    i = max(range(1, len(steps)), key=lambda j: steps[j])  # rank >= 2: a dominant σ_1 alone is no knee
    ratio = math.exp(steps[i])
    if ratio >= KNEE_MIN_RATIO and steps[i] >= KNEE_STEP_FACTOR * max(typical, 1e-12):
        return i + 1, ratio
    return None, None


def top_spectra(report: ComparisonReport, n: int = 6) -> list[Spectrum]:
    """Spectra of the n most changed modules that have singular values."""
    out: list[Spectrum] = []
    for m in profile_modules(report):
        if len(out) >= n:
            break
        values = [v for v in (m.top_singular_values or []) if v > 0]
        if m.identical or not m.has_svd or len(values) < 2:
            continue
        rank, ratio = rank_cliff(m)
        knee, knee_ratio = spectral_knee(values) if rank is None else (None, None)
        out.append(Spectrum(m, values, rank, ratio, knee, knee_ratio))
    return out


def short_name(name: str) -> str:
    """A module name without the common container prefixes (for plot labels; tables keep full names)."""
    for prefix in ("model.", "transformer.", "encoder.", "decoder.", "base_model.model."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def hub_url(spec: str, source: str, revision: str | None) -> str | None:
    """The model page of a hub checkpoint (a plain link; nothing is loaded from it)."""
    if source != "hub":
        return None
    repo = spec.split("@", 1)[0]
    return f"https://huggingface.co/{repo}" + (f"/tree/{revision}" if revision else "")


def fmt_params(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}".replace(".00", "")
    return str(n)


def fmt_num(v: float | None, digits: int = 4) -> str:
    """Compact numbers: fixed point in the usual range, scientific beyond it."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if v == 0:
        return "0"
    if math.isinf(v):
        return "∞"
    a = abs(v)
    if a >= 1e5 or a < 10 ** -(digits - 1):
        return f"{v:.2e}"
    if float(v).is_integer() and a < 1e5:
        return str(int(v))
    return f"{v:.{digits}g}" if a >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
