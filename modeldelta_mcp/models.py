"""Pydantic models: the JSON contracts of every answer and of the report (docs/contracts.md).

Fields only grow; never rename. `schemas/` (`python -m modeldelta_mcp.schemas`) and docs/contracts.md
(`python -m modeldelta_mcp.contracts`) are generated from these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"

Role = Literal[
    "embed", "pos_embed", "head", "attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv",
    "mlp_gate", "mlp_up", "mlp_down", "mlp_gate_up", "norm", "router", "pooler", "other",
]
ProfileTag = Literal["identical", "surgical", "standard", "heavy", "extreme"]
Severity = Literal["info", "notable", "warning"]
SpectrumMode = Literal["exact", "fast", "off"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantGroup(_Model):
    """Tensors a quantized checkpoint stores under one declared scheme (read from its headers and config)."""

    label: str = Field(description="Key of the group; ModuleDelta.quant_a / quant_b name it.")
    format: str = Field(description="gptq | awq | bitsandbytes | compressed-tensors | fp8 | gguf")
    declared_scheme: str = Field(description="The file's own name for the scheme (gptq, awq, nf4, int8, "
                                 "pack-quantized, fp8, Q4_K...).")
    number_format: str | None = Field(None, description="int_symmetric | int_asymmetric | nf4 | fp4 | fp8_e4m3 | "
                                      "fp8_e5m2, or null for codebook types without a name here.")
    bits: int | None = None
    group_size: int | None = Field(None, description="Entries sharing a scale along a row (null: per row/tensor).")
    granularity: str | None = Field(None, description="per_tensor | per_row | per_group | per_block")
    act_order: bool = Field(False, description="Groups follow an activation order (GPTQ desc_act, g_idx).")
    n_tensors: int
    n_params: int
    roles: dict[str, int] = Field(default_factory=dict, description="Tensor count per role.")


class CheckpointInfo(_Model):
    source: Literal["local", "hub", "adapter"] = Field(description="Where the weights came from.")
    id: str = Field(description="The spec as given: hub id or local path.")
    revision: str | None = Field(None, description="Hub commit sha, or null for local files.")
    files: list[str] = Field(description="Weight files read (relative to the checkpoint root).")
    n_tensors: int
    n_params: int
    dtypes: dict[str, int] = Field(description="Tensor count per stored dtype.")
    architecture: str | None = Field(None, description="config.json architectures[0] or model_type.")
    format: str | None = Field(None, description="On-disk format: safetensors | torch | adapter | gptq | awq | "
                               "bitsandbytes | compressed-tensors | fp8 | gguf.")
    quantization: list[QuantGroup] = Field(
        default_factory=list, description="Declared quantization per tensor group (empty: plain float weights)."
    )
    streamed: bool = Field(False, description="Hub weights read by HTTP range requests; no shard downloaded.")


class ModuleDelta(_Model):
    name: str = Field(description="Tensor name exactly as stored in B (or A when B lacks it); the Hugging Face "
                      "name for a format read through a name map (GGUF, packed GPTQ/AWQ...).")
    stored_name: str | None = Field(None, description="The file's own tensor name where it differs from name.")
    role: Role
    layer: int | None
    shape: list[int]
    n_params: int
    dtype_a: str
    dtype_b: str
    frob_norm: float
    frob_norm_relative: float
    cosine_sim: float
    sparsity: float = Field(description="Fraction of |ΔW| < 1e-5.")
    identical: bool
    has_svd: bool
    effective_rank: float | None = None
    stable_rank: float | None = None
    concentration_top_k: float | None = None
    top_k: int | None = None
    top_singular_values: list[float] | None = None
    spectral_alpha: float | None = None
    n_singular_values: int | None = None
    in_profile: bool = Field(description="In the seed's set (>= 1000 parameters): feeds means and bands.")
    rows_a: int | None = None
    rows_b: int | None = None
    spectrum: SpectrumMode | None = Field(None, description="How the singular values were obtained.")
    nonfinite: int = Field(0, description="NaN/Inf entries found in A or B (zeroed for the metrics).")
    forensics: dict[str, float] = Field(
        default_factory=dict, description="Counts behind the method fingerprints (docs/diagnosis.md)."
    )
    quant_a: str | None = Field(None, description="Label of A's declared quantization group, if A is quantized.")
    quant_b: str | None = Field(None, description="Label of B's declared quantization group, if B is quantized.")


class CompactModule(_Model):
    name: str
    role: Role
    layer: int | None
    frob_norm_relative: float
    cosine_sim: float
    effective_rank: float | None


class SkippedTensor(_Model):
    name: str
    reason: str


class Totals(_Model):
    total_delta_norm: float
    mean_relative_change: float
    mean_cosine_sim: float
    mean_effective_rank: float | None
    n_identical: int
    n_changed: int


class LayerRoleMetrics(_Model):
    frob_norm_relative: float
    cosine_sim: float
    effective_rank: float | None
    concentration_top_k: float | None


class LayerRow(_Model):
    layer: int
    roles: dict[str, LayerRoleMetrics] = Field(description="Role -> metrics of that role's weight in the layer.")


class Finding(_Model):
    code: str = Field(description="Stable identifier agents branch on (docs/contracts.md lists every code and its "
                      "evidence keys).")
    category: str
    severity: Severity
    title: str
    detail: str
    metric_value: float | str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class Diagnostics(_Model):
    profile_tag: ProfileTag
    method: str = Field(description="Primary finding code: the first method code, in the precedence order of "
                        "docs/contracts.md, whose finding holds.")
    summary: str
    findings: list[Finding]


class EngineInfo(_Model):
    version: str
    spectrum: SpectrumMode
    top_k: int
    device: str
    seconds: float
    bytes_read: int


class FilterInfo(_Model):
    include: list[str] = Field(default_factory=list, description="Globs a tensor name had to match (any).")
    exclude: list[str] = Field(default_factory=list, description="Globs that left a tensor out.")
    layers: str | None = Field(None, description="Layer indices kept, as given (\"0-7,20\").")
    n_filtered: int = Field(description="Tensors (pairs or one-sided) the filter left out; not in `skipped`.")


class BaseInference(_Model):
    model_a: str = Field(description="The base used as model_a.")
    source: Literal["card", "adapter_config"] = Field(
        description="card: B's model card `base_model`; adapter_config: `base_model_name_or_path`.")
    detail: str = Field(description="Where exactly it was read, in words.")


class Checkpoints(_Model):
    a: CheckpointInfo
    b: CheckpointInfo


class ComparisonReport(_Model):
    schema_version: str = SCHEMA_VERSION
    report_id: str
    model_a: str
    model_b: str
    checkpoints: Checkpoints
    n_tensors: int
    n_skipped: int
    skipped: list[SkippedTensor]
    totals: Totals
    modules: list[ModuleDelta]
    layers: list[LayerRow]
    diagnostics: Diagnostics
    engine: EngineInfo
    model_info: dict[str, Any] = Field(default_factory=dict, description="config.json facts of A and B.")
    filters: FilterInfo | None = Field(None, description="The tensor filter, when one was given.")
    base_inferred: BaseInference | None = Field(None, description="Set when model_a was inferred from B.")


# ---- tool answers -------------------------------------------------------------


class Counts(_Model):
    n_tensors: int
    n_skipped: int
    n_identical: int
    n_changed: int


class CompareSummary(_Model):
    report_id: str
    model_a: str
    model_b: str
    checkpoints: Checkpoints
    counts: Counts
    totals: Totals
    diagnostics: Diagnostics
    top_modules: list[CompactModule]
    report_uri: str
    engine: EngineInfo
    filters: FilterInfo | None = None
    base_inferred: BaseInference | None = None


class DiagnosisAnswer(_Model):
    report_id: str
    diagnostics: Diagnostics
    base_inferred: BaseInference | None = None


class TopModulesAnswer(_Model):
    report_id: str
    sort_by: str
    role: str | None = None
    modules: list[ModuleDelta]


class LayerProfileAnswer(_Model):
    report_id: str
    metrics: list[str]
    roles: list[str]
    layers: list[LayerRow]


class TensorHeader(_Model):
    name: str
    shape: list[int]
    dtype: str
    role: Role
    layer: int | None


class InspectAnswer(_Model):
    checkpoint: CheckpointInfo
    n_layers: int | None
    roles: dict[str, int] = Field(description="Tensor count per role.")
    largest_tensors: list[TensorHeader]
