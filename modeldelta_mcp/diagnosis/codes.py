"""Every finding code the diagnosis emits, with its category and evidence keys: the contract agents branch on.

docs/contracts.md is generated from this table (python -m modeldelta_mcp.contracts); the forensics corpus
tests check that every finding a real comparison produces is registered here with only these evidence keys.
Codes and keys only get added, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FindingCode:
    code: str
    category: str
    evidence: tuple[str, ...]
    meaning: str


FINDING_CODES: tuple[FindingCode, ...] = (
    # ---- method fingerprints (category "method"); diagnostics.method is one of these ----
    FindingCode("identical", "method", ("n_tensors",),
                "Every compared tensor is bit-equal and no vocabulary axis was resized."),
    FindingCode("permutation", "method",
                ("layers", "units", "n_units_moved", "n_tensors", "tensors", "min_aligned_cosine"),
                "B's hidden units (MLP units: rows of up/gate and columns of down; attention heads: q/k/v row "
                "blocks and o column blocks) are A's in another order; the metrics compare the aligned weights and "
                "the recipe continues with what was done after (units: mlp, heads)."),
    FindingCode("unrelated_models", "method",
                ("fraction_within_null", "median_abs_z", "mean_cosine", "n_matrices", "z_threshold"),
                "B is not derived from A: the deltas look like two independent initialisations."),
    FindingCode("precision_change", "method",
                ("format", "max_relative_change", "n_tensors_cast", "n_tensors_kept", "stored_dtypes",
                 "n_tensors_only_cast"),
                "B is A cast to a lower precision (bf16/fp16), kept or saved back; alone (only rounding changed) "
                "or as the storing step after another (recipe)."),
    FindingCode("quantization_roundtrip", "method",
                ("bits", "granularity", "group_size", "scheme", "n_tensors", "n_tensors_kept", "roles",
                 "number_format", "stored_format", "tensors", "formats", "min_evidence_bits",
                 # a scheme the files declare (sources/quantized), checked against the values
                 "declared_scheme", "declared_scheme_a", "format", "schemes", "consistency", "inconsistent_tensors",
                 "measured_bits", "median_relative_error", "relative_error_by_role", "worst_layers", "kept_roles",
                 "kept_tensors", "kept_changed", "kept_rounded", "expected_relative_error", "error_vs_grid", "grid"),
                "B is A quantized and dequantized: its weights sit on a quantizer's grid (integer, NF4/FP4, FP8) "
                "within the rounding of the float format they were stored in, or B's files declare the scheme."),
    FindingCode("pruning", "method",
                ("fraction", "magnitude_ratio", "n_tensors", "n_zeroed", "roles", "pattern", "patterns", "tensors"),
                "Entries of A were set to zero in B (magnitude pruning keeps the large ones); pattern: unstructured, "
                "2:4, 4:8, rows, columns or heads."),
    FindingCode("sparse_delta", "method",
                ("density", "density_active_rows", "rescale", "rescale_basis", "pair_ratio", "n_tensors", "roles"),
                "Only a fraction of the entries changed (DARE/TIES-style sparse task vectors)."),
    FindingCode("noise_injection", "method",
                ("n_matrices", "max_top_over_edge", "max_decile_error", "noise_relative_std", "roles"),
                "The delta's spectrum is that of i.i.d. noise (Marchenko-Pastur), not of training."),
    FindingCode("layer_copy", "method", ("copies", "n_copies"),
                "Layers of B are copies of other layers of A (depth up-scaling, layer duplication)."),
    FindingCode("lora_adapter", "method",
                ("rank", "alpha", "scaling", "use_rslora", "n_modules", "core_rank", "measured_rank", "ranks",
                 "replaced_tensors", "target_modules", "base_model_name_or_path", "roles"),
                "B is a PEFT LoRA adapter for A; the report compares A with the adapter merged into it."),
    FindingCode("lora_merge", "method",
                ("rank", "ranks_by_role", "roles", "untouched_roles", "n_modules", "layers", "n_vectors_changed",
                 "min_cliff", "variant", "modules_to_save"),
                "The deltas are exactly low rank with a cliff in the spectrum: a merged LoRA (variant lora), or low "
                "rank once their rows are rescaled: a merged DoRA (variant dora)."),
    FindingCode("bias_only", "method", ("n_biases_changed", "n_norms_changed", "n_changed", "roles"),
                "Only biases (and norms) changed: BitFit."),
    FindingCode("vocab_resized", "method", ("rows_a", "rows_b", "rows_added", "tensors"),
                "The embedding / LM-head vocabulary axis grew or shrank."),
    FindingCode("frozen_modules", "method", ("changed_layers", "frozen_layers", "frozen_roles"),
                "Whole layers or roles are bit-identical while others were trained."),
    FindingCode("full_finetune", "method",
                ("n_matrices", "n_changed_matrices", "median_rank_fraction", "density", "module_types", "roles",
                 "n_tensors", "tensors", "later_steps"),
                "Dense, full-rank updates across every module family: full fine-tuning (also the default, and a "
                "training step only the tensors a later storing step left alone show)."),
    FindingCode("oq_ratio", "method",
                ("oq", "variant", "o_mean_relative", "q_mean_relative", "n_layers", "threshold"),
                "Relative change of attention output over query projections (a distillation heuristic); "
                "never the primary method."),
    # ---- claims (category "claim"; never a method, never in the precedence list) ----
    FindingCode("base_claim", "claim",
                ("claimed_base", "claimed_relation", "relation_stated", "claim_source", "compared_base", "verdict",
                 "mean_cosine_sim", "min_cosine_sim", "n_tensors", "n_changed"),
                "What B's model card or adapter config says it derives from, checked against the weights: "
                "verdict consistent | contradicted | cannot_tell."),
    # ---- the seed's profile findings ----
    FindingCode("magnitude", "magnitude", ("mean_relative_change", "profile_tag"),
                "Overall intensity of the change; gives the profile tag."),
    FindingCode("structure", "structure", ("mean_concentration_top_k", "mean_effective_rank", "top_k"),
                "Low-rank or full-rank structure of the deltas."),
    FindingCode("attention", "attention", ("attention_mean", "mlp_mean", "ratio"),
                "Attention changed more or less than the MLP."),
    FindingCode("head", "head", ("module", "ratio", "body_mean"),
                "The output head changed far more than the body."),
    FindingCode("layernorm", "layernorm", ("mean_relative_change", "n"),
                "How much the normalisation weights moved."),
    FindingCode("layer_profile", "layer_profile", ("u_ratio", "n_layers", "peak_layer"),
                "Where in depth the change concentrates (U-shape, peak layer)."),
    FindingCode("outliers", "outliers", ("modules", "values"),
                "The most changed modules and their relative change."),
    # ---- integrity ----
    FindingCode("nonfinite", "integrity", ("tensors", "n_entries"),
                "NaN/Inf entries in B (zeroed for the metrics)."),
)

BY_CODE: dict[str, FindingCode] = {c.code: c for c in FINDING_CODES}


def unregistered(code: str, category: str, evidence_keys: list[str]) -> str | None:
    """Why a finding breaks the registry (unknown code, other category, unknown evidence key), or None."""
    spec = BY_CODE.get(code)
    if spec is None:
        return f"finding code {code!r} is not in diagnosis/codes.py"
    if category != spec.category:
        return f"finding {code}: category {category!r}, registered {spec.category!r}"
    extra = sorted(set(evidence_keys) - set(spec.evidence))
    return f"finding {code}: evidence keys {extra} are not registered" if extra else None
