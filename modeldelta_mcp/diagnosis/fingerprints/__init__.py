"""Method fingerprints (category `method`): how B was made from A. Pure functions of ModuleDelta rows.

Each detector reads a Context (the rows plus, for a PEFT adapter B, the adapter's facts) and returns a
Finding or None. Thresholds are named next to the reason for their value in the detector modules and
documented in docs/diagnosis.md.
"""

from __future__ import annotations

from collections.abc import Callable

from modeldelta_mcp.diagnosis.fingerprints.adapter import detect_lora_adapter
from modeldelta_mcp.diagnosis.fingerprints.context import Context
from modeldelta_mcp.diagnosis.fingerprints.declared_quant import with_declared
from modeldelta_mcp.diagnosis.fingerprints.oq import detect_oq_ratio
from modeldelta_mcp.diagnosis.fingerprints.sparsity import detect_pruning, detect_sparse_delta
from modeldelta_mcp.diagnosis.fingerprints.spectral import detect_full_finetune, detect_lora_merge, detect_noise
from modeldelta_mcp.diagnosis.fingerprints.structure import (
    detect_bias_only,
    detect_frozen,
    detect_layer_copy,
    detect_vocab_resized,
)
from modeldelta_mcp.diagnosis.fingerprints.transforms import (
    detect_identical,
    detect_precision_change,
    detect_quantization,
    detect_unrelated,
)
from modeldelta_mcp.facts import AdapterFacts
from modeldelta_mcp.models import Finding, ModuleDelta, QuantGroup

# diagnostics.method is the first code of this list whose finding holds (docs/contracts.md).
PRECEDENCE = [
    "identical", "permutation", "unrelated_models", "precision_change", "quantization_roundtrip", "pruning",
    "sparse_delta", "noise_injection", "layer_copy", "lora_adapter", "lora_merge", "bias_only", "vocab_resized",
    "frozen_modules", "full_finetune",
]

Detector = Callable[[Context], "Finding | None"]

DETECTORS: dict[str, Detector] = {
    "identical": detect_identical,
    "unrelated_models": detect_unrelated,
    "precision_change": detect_precision_change,
    "quantization_roundtrip": with_declared(detect_quantization),
    "pruning": detect_pruning,
    "sparse_delta": detect_sparse_delta,
    "noise_injection": detect_noise,
    "layer_copy": detect_layer_copy,
    "lora_adapter": detect_lora_adapter,
    "lora_merge": detect_lora_merge,
    "bias_only": detect_bias_only,
    "vocab_resized": detect_vocab_resized,
    "frozen_modules": detect_frozen,
    "full_finetune": detect_full_finetune,
    "oq_ratio": detect_oq_ratio,
}

# Steps the engine establishes and hands over as facts (engine/permutation.py), not read from the rows.
ENGINE_STEPS = ("permutation",)

# Whole-model transforms: B is A under them (or not A at all). Their footprint (rounding or grid noise, a
# quantizer's zero level) is no training method: diagnosis/recipe.py peels them off before reading the
# training fingerprints of what remains.
TRANSFORMS = ("identical", "unrelated_models", "precision_change", "quantization_roundtrip")


def detect_all(mods: list[ModuleDelta], adapter: AdapterFacts | None = None,
               quantization: list[QuantGroup] | None = None) -> list[Finding]:
    """The method findings of the derivation of B from A (diagnosis/recipe.py), in precedence order."""
    from modeldelta_mcp.diagnosis.recipe import derive  # recipe composes the detectors defined here

    return derive(mods, adapter, quantization).findings


def primary_method(findings: list[Finding]) -> str:
    """First code of PRECEDENCE among the findings; full_finetune when no fingerprint holds."""
    codes = {f.code for f in findings if f.category == "method"}
    for code in PRECEDENCE:
        if code in codes:
            return code
    return "full_finetune"


__all__ = ["DETECTORS", "ENGINE_STEPS", "PRECEDENCE", "TRANSFORMS", "detect_all", "primary_method"]
