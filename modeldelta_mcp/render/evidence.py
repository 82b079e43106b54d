"""The key evidence of each finding, as labelled short strings (shared by text, Markdown and HTML).

A table of finding code -> the evidence keys worth a headline, each with its label and formatter; every
other key still appears under "all evidence". Unknown codes fall back to their numeric evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modeldelta_mcp.models import Diagnostics, Finding
from modeldelta_mcp.render.derive import fmt_num

MAX_LIST_ITEMS = 8  # lists longer than this are shown as their first items and a count


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return fmt_num(float(v))
    if isinstance(v, list):
        items = [fmt_value(x) if not isinstance(x, list) else "→".join(fmt_value(y) for y in x) for x in v]
        more = len(items) - MAX_LIST_ITEMS
        return ", ".join(items[:MAX_LIST_ITEMS]) + (f", … (+{more})" if more > 0 else "")
    if isinstance(v, dict):
        return ", ".join(f"{k} {fmt_value(x)}" for k, x in list(v.items())[:MAX_LIST_ITEMS])
    return "—" if v is None else str(v)


def _pct(v: Any) -> str:
    return f"{float(v):.1%}" if isinstance(v, int | float) else fmt_value(v)


def _ratio(v: Any) -> str:
    return f"×{fmt_num(float(v), 3)}" if isinstance(v, int | float) else fmt_value(v)


def _ranges(v: Any) -> str:
    """[0, 1, 2, 5] -> "0–2, 5"."""
    if not isinstance(v, list) or not all(isinstance(x, int) for x in v):
        return fmt_value(v)
    xs, parts = sorted(v), []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}–{xs[j]}")
        i = j + 1
    return ", ".join(parts) if parts else "none"


def _copies(v: Any) -> str:
    if not isinstance(v, list):
        return fmt_value(v)
    return ", ".join(f"B{to}←A{src}" for to, src in v[:MAX_LIST_ITEMS]) + (" …" if len(v) > MAX_LIST_ITEMS else "")


Spec = tuple[str, str, Callable[[Any], str]]
KEY_EVIDENCE: dict[str, list[Spec]] = {
    "lora_merge": [("rank", "rank", fmt_value), ("roles", "targets", fmt_value), ("layers", "layers", _ranges),
                   ("min_cliff", "cliff", _ratio)],
    "lora_adapter": [("rank", "rank", fmt_value), ("alpha", "alpha", fmt_value),
                     ("target_modules", "targets", fmt_value), ("roles", "roles", fmt_value),
                     ("core_rank", "exact rank", fmt_value)],
    "quantization_roundtrip": [("bits", "bits", fmt_value), ("granularity", "granularity", fmt_value),
                               ("group_size", "group", fmt_value), ("scheme", "scheme", fmt_value),
                               ("number_format", "format", fmt_value),
                               ("declared_scheme", "declared", fmt_value)],
    "precision_change": [("format", "format", fmt_value), ("stored_dtypes", "stored as", fmt_value),
                         ("n_tensors_cast", "tensors cast", fmt_value)],
    "pruning": [("fraction", "pruned", _pct), ("pattern", "pattern", fmt_value),
                ("magnitude_ratio", "RMS of pruned / all", fmt_value), ("roles", "roles", fmt_value)],
    "sparse_delta": [("density", "density", _pct), ("rescale", "rescale", _ratio), ("roles", "roles", fmt_value)],
    "noise_injection": [("noise_relative_std", "noise σ / RMS(W)", fmt_value),
                        ("max_top_over_edge", "top σ / MP edge", fmt_value), ("n_matrices", "matrices", fmt_value)],
    "frozen_modules": [("frozen_layers", "frozen layers", _ranges), ("changed_layers", "changed layers", _ranges),
                       ("frozen_roles", "frozen roles", fmt_value)],
    "layer_copy": [("copies", "copies", _copies), ("n_copies", "n", fmt_value)],
    "vocab_resized": [("rows_a", "rows A", fmt_value), ("rows_b", "rows B", fmt_value),
                      ("rows_added", "added", fmt_value)],
    "bias_only": [("n_biases_changed", "biases changed", fmt_value), ("n_norms_changed", "norms changed", fmt_value)],
    "full_finetune": [("density", "density", _pct), ("median_rank_fraction", "median rank", _pct),
                      ("module_types", "modules", fmt_value), ("n_changed_matrices", "matrices", fmt_value)],
    "unrelated_models": [("fraction_within_null", "within null", _pct), ("median_abs_z", "median |z|", fmt_value)],
    "permutation": [("layers", "layers", _ranges), ("units", "units", fmt_value)],
    "identical": [("n_tensors", "tensors", fmt_value)],
    "oq_ratio": [("oq", "O/Q", fmt_value), ("o_mean_relative", "O ΔW/W", fmt_value),
                 ("q_mean_relative", "Q ΔW/W", fmt_value), ("threshold", "notable above", fmt_value)],
    # The seed's findings.
    "magnitude": [("mean_relative_change", "mean ΔW/W", fmt_value), ("profile_tag", "profile", fmt_value)],
    "structure": [("mean_concentration_top_k", "top-k energy", _pct),
                  ("mean_effective_rank", "mean eff. rank", fmt_value), ("top_k", "k", fmt_value)],
    "attention": [("attention_mean", "attention ΔW/W", fmt_value), ("mlp_mean", "MLP ΔW/W", fmt_value),
                  ("ratio", "ratio", _ratio)],
    "head": [("ratio", "× body mean", fmt_value), ("body_mean", "body ΔW/W", fmt_value)],
    "layernorm": [("mean_relative_change", "norm ΔW/W", fmt_value), ("n", "norm tensors", fmt_value)],
    "layer_profile": [("u_ratio", "U-ratio", fmt_value), ("peak_layer", "peak layer", fmt_value),
                      ("n_layers", "layers", fmt_value)],
    "outliers": [],
    "base_claim": [("verdict", "verdict", fmt_value), ("claimed_base", "claimed base", fmt_value),
                   ("claimed_relation", "relation", fmt_value)],
}


def key_evidence(f: Finding, limit: int = 5) -> list[tuple[str, str]]:
    """(label, value) pairs: the code's headline keys that are present, else its scalar evidence."""
    specs = KEY_EVIDENCE.get(f.code)
    if specs is None:
        return [(k, fmt_value(v)) for k, v in f.evidence.items() if isinstance(v, int | float | str)][:limit]
    return [(label, fmt(f.evidence[key])) for key, label, fmt in specs
            if key in f.evidence and f.evidence[key] is not None][:limit]


def method_finding(d: Diagnostics) -> Finding | None:
    return next((f for f in d.findings if f.code == d.method), None)


def method_line(d: Diagnostics) -> str:
    """`lora_merge — LoRA merged … · rank 4 · targets attn_q, attn_v · …` on one line."""
    f = method_finding(d)
    if f is None:
        return d.method
    facts = " · ".join(f"{label} {value}" for label, value in key_evidence(f))
    return f"{d.method} — {f.title}" + (f" · {facts}" if facts else "")
