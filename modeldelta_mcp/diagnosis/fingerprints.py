"""Method fingerprints (category `method`): how B was made from A. Pure functions of ModuleDelta rows.

Each detector returns a Finding or None. Thresholds are named next to the reason for their value
and documented in docs/diagnosis.md.
"""

from __future__ import annotations

from collections.abc import Callable

from modeldelta_mcp.models import Finding, ModuleDelta

# DESIGN.md: diagnostics.method is the first code of this list whose finding holds.
PRECEDENCE = [
    "identical", "unrelated_models", "precision_change", "quantization_roundtrip", "pruning", "sparse_delta",
    "noise_injection", "layer_copy", "lora_adapter", "lora_merge", "bias_only", "vocab_resized",
    "frozen_modules", "full_finetune",
]

Detector = Callable[[list[ModuleDelta]], "Finding | None"]


def _is_weight_matrix(m: ModuleDelta) -> bool:
    return m.has_svd and m.name.endswith("weight")


def detect_identical(mods: list[ModuleDelta]) -> Finding | None:
    if mods and all(m.identical for m in mods):
        return Finding(code="identical", category="method", severity="info", title="Identical weights",
                       detail=f"All {len(mods)} compared tensors are bit-equal after alignment.",
                       evidence={"n_tensors": len(mods)})
    return None


def detect_vocab_resized(mods: list[ModuleDelta]) -> Finding | None:
    resized = [m for m in mods if m.rows_a is not None and m.rows_b is not None and m.rows_a != m.rows_b]
    if not resized:
        return None
    m = resized[0]
    added = (m.rows_b or 0) - (m.rows_a or 0)
    verb = "added" if added > 0 else "removed"
    return Finding(code="vocab_resized", category="method", severity="notable", title="Vocabulary resized",
                   detail=f"{abs(added)} vocabulary rows {verb} ({m.rows_a} -> {m.rows_b}); the overlapping rows "
                   "were compared.",
                   metric_value=added,
                   evidence={"rows_a": m.rows_a, "rows_b": m.rows_b, "rows_added": added,
                             "tensors": [x.name for x in resized]})


DETECTORS: list[Detector] = [detect_identical, detect_vocab_resized]


def detect_all(mods: list[ModuleDelta]) -> list[Finding]:
    found = [f for f in (d(mods) for d in DETECTORS) if f is not None]
    return found


def primary_method(findings: list[Finding]) -> str:
    codes = {f.code for f in findings if f.category == "method"}
    for code in PRECEDENCE:
        if code in codes:
            return code
    return "full_finetune"
