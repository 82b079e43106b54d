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


class CheckpointInfo(_Model):
    source: Literal["local", "hub", "adapter"] = Field(description="Where the weights came from.")
    id: str = Field(description="The spec as given: hub id or local path.")
    revision: str | None = Field(None, description="Hub commit sha, or null for local files.")
    files: list[str] = Field(description="Weight files read (relative to the checkpoint root).")
    n_tensors: int
    n_params: int
    dtypes: dict[str, int] = Field(description="Tensor count per stored dtype.")
    architecture: str | None = Field(None, description="config.json architectures[0] or model_type.")


class ModuleDelta(_Model):
    name: str = Field(description="Tensor name exactly as stored in B (or A when B lacks it).")
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


class DiagnosisAnswer(_Model):
    report_id: str
    diagnostics: Diagnostics


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
