"""Pydantic models: the JSON contracts of every answer and of the report (docs/contracts.md).

Fields only grow; never rename. `schemas/` (`python -m modeldelta_mcp.schemas`) and docs/contracts.md
(`python -m modeldelta_mcp.contracts`) are generated from these models.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    create_model,
    model_serializer,
)

from modeldelta_mcp.numerics import DECILE_KEYS

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
    format: str = Field(description="gptq | awq | bitsandbytes | compressed-tensors | fp8 | quanto | gguf")
    declared_scheme: str = Field(description="The file's own name for the scheme (gptq, awq, nf4, int8, "
                                 "pack-quantized, fp8, qint4, Q4_K...).")
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
                               "bitsandbytes | compressed-tensors | fp8 | quanto | gguf.")
    quantization: list[QuantGroup] = Field(
        default_factory=list, description="Declared quantization per tensor group (empty: plain float weights)."
    )
    streamed: bool = Field(False, description="Hub weights read by HTTP range requests; no shard downloaded.")


# A counter is a number when measured and absent otherwise (never null in the JSON).
Counter = Annotated[float | None, WithJsonSchema({"type": "number"})]


def _counter(description: str) -> Any:
    return Field(None, description=description)


class QuantCounts(NamedTuple):
    """The k-bit grid test of one granularity (engine/forensics.py grid_groups)."""

    n: float  # groups tested
    grid: float  # groups on a uniform grid
    bits: float  # bits spanned by the widest grid
    levels: float  # most distinct values in one group
    size: float  # entries per group


class QuantGrid(_Model):
    """The quantizer grid a tensor's sampled rows sit on (engine/quant_fit.py), allowing for the rounding of
    the float format the dequantized values were stored in."""

    number_format: str = Field(description="int_symmetric | int_asymmetric | nf4 | fp4 | fp8_e4m3 | fp8_e5m2.")
    granularity: str = Field(description="Scale granularity: per_tensor | per_row | per_column | per_group | "
                             "per_block (absmax blocks of the flattened tensor).")
    group_size: int | None = Field(None, description="Entries per group or block (per_group, per_block).")
    bits: int = Field(description="Bits of the grid (levels used in the sample; 4 for NF4/FP4, 8 for FP8).")
    n_groups: int = Field(description="Groups tested.")
    evidence_bits: float = Field(description="Improbability (bits) that values off any grid fit by chance.")
    misses: int = Field(description="Informative values outside their rounding bound (a few allowed).")
    levels: int = Field(description="Most distinct values in one of the first groups.")


def _counter_model(name: str, descriptions: dict[str, str]) -> type[_Model]:
    """A model whose fields are counters, from a table of names and descriptions, in the table's order."""
    fields: dict[str, Any] = {k: (Counter, _counter(d)) for k, d in descriptions.items()}
    return create_model(name, __base__=_Model, **fields)


# The counters are data (name and description): counters.toml lists them once, in the JSON's order.
_COUNTER_TABLES = tomllib.loads(resources.files(__package__).joinpath("counters.toml").read_text(encoding="utf-8"))

if TYPE_CHECKING:
    class _Counters(_Model):
        def __getattr__(self, name: str) -> float | None: ...  # every counter of counters.toml

    class _CountersV2(_Model): ...
else:
    _Counters = _counter_model("_Counters", _COUNTER_TABLES["counters"])
    _CountersV2 = _counter_model("_CountersV2", _COUNTER_TABLES["counters_v2"])


class _QuantGrids(_Model):
    quant_b: QuantGrid | None = Field(default=None, description="Quantizer grid of B's sampled rows, if any.")
    quant_a: QuantGrid | None = Field(default=None, description="Quantizer grid of A's sampled rows, if any.")


# Bases in reverse field order: pydantic lists inherited fields from the last base of the MRO to the first,
# so the JSON keeps one order: counters, quantizer grids, the counters added with forensics v2.
class ForensicCounters(_CountersV2, _QuantGrids, _Counters):
    """Counters behind the method fingerprints (docs/diagnosis.md), accumulated by the engine chunk by chunk.

    A counter that was not measured for a tensor (no spectrum, no sampled rows, a granularity the width
    does not divide) is None and absent from the JSON.
    """

    if TYPE_CHECKING:  # the counters' keywords come from counters.toml, which mypy does not read
        def __init__(self, **counters: float | QuantGrid | None) -> None: ...

    @model_serializer(mode="wrap")
    def _measured_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Counters not measured stay out of the JSON (the report lists only what was measured)."""
        return {k: v for k, v in handler(self).items() if v is not None}

    def quant(self, label: str) -> QuantCounts | None:
        """The grid test at granularity `label` (numerics.QUANT_GRANULARITIES), None when not run."""
        values = [getattr(self, f"q_{label}_{part}") for part in QuantCounts._fields]
        return None if values[0] is None else QuantCounts(*(v or 0.0 for v in values))

    @staticmethod
    def quant_fields(label: str, counts: QuantCounts) -> dict[str, float]:
        """Keyword arguments that set the grid test of granularity `label`."""
        return {f"q_{label}_{part}": float(v) for part, v in zip(QuantCounts._fields, counts, strict=True)}

    def cast(self, fmt: str) -> tuple[bool, float]:
        """(every entry of B on the format's grid, changed entries that are a one-ULP rounding of A)."""
        return getattr(self, f"b_on_{fmt}_grid") == 1.0, getattr(self, f"n_rounded_{fmt}") or 0.0

    def deciles(self) -> list[float] | None:
        """The deciles of σ (numerics.DECILES), None without the exact spectrum."""
        values = [getattr(self, k) for k in DECILE_KEYS]
        return None if any(v is None for v in values) else values

    @staticmethod
    def cast_fields(fmt: str, on_grid: bool, n_rounded: int) -> dict[str, float]:
        return {f"b_on_{fmt}_grid": 1.0 if on_grid else 0.0, f"n_rounded_{fmt}": float(n_rounded)}

    @staticmethod
    def cast_fields_a(fp16_on: bool, bf16_on: bool, fp16_rounded: int, bf16_rounded: int) -> dict[str, float]:
        return {"a_on_float16_grid": float(fp16_on), "a_on_bfloat16_grid": float(bf16_on),
                "n_rounded_float16_a": float(fp16_rounded), "n_rounded_bfloat16_a": float(bf16_rounded)}

    def mirrored(self) -> ForensicCounters:
        """The counters read with A and B exchanged (how A would look as derived from B); counters kept for
        B only (the legacy grid test, zero patterns) are dropped."""
        if self.a_on_float16_grid is None:
            return ForensicCounters.model_validate(dict(
                numel=self.numel, n_zero_delta=self.n_zero_delta, max_abs_delta=self.max_abs_delta,
                norm_a=self.norm_b, norm_b=self.norm_a))
        keep = {k: getattr(self, k) for k in (
            "numel", "n_zero_delta", "max_abs_delta", "n_nonzero_delta", "active_rows", "active_entries",
            "zero_pairs_active", "pairs_active", "sv_floor", "sv_rank", "sv_min", *DECILE_KEYS, "sv_cliff",
            "rescaled_rank")}
        swapped = dict(
            norm_a=self.norm_b, norm_b=self.norm_a, sum_a=self.sum_b, sum_b=self.sum_a, crc_a=self.crc_b,
            crc_b=self.crc_a, n_zero_b=self.n_zero_a or 0.0, n_pruned=self.n_pruned_a or 0.0,
            rms_a_pruned=self.rms_b_pruned_a or 0.0, n_zero_a=self.n_zero_b, n_pruned_a=self.n_pruned,
            rms_b_pruned_a=self.rms_a_pruned, unit_roundoff_b=self.unit_roundoff_a,
            unit_roundoff_a=self.unit_roundoff_b, b_on_float16_grid=self.a_on_float16_grid,
            a_on_float16_grid=self.b_on_float16_grid, b_on_bfloat16_grid=self.a_on_bfloat16_grid,
            a_on_bfloat16_grid=self.b_on_bfloat16_grid, n_rounded_float16=self.n_rounded_float16_a,
            n_rounded_float16_a=self.n_rounded_float16, n_rounded_bfloat16=self.n_rounded_bfloat16_a,
            n_rounded_bfloat16_a=self.n_rounded_bfloat16, quant_b=self.quant_a, quant_a=self.quant_b)
        return ForensicCounters.model_validate({**keep, **swapped})


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
    forensics: ForensicCounters = Field(
        default_factory=ForensicCounters, description="Counts behind the method fingerprints (docs/diagnosis.md)."
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


Direction = Literal["b_from_a", "a_from_b", "unknown"]


class Diagnostics(_Model):
    profile_tag: ProfileTag
    method: str = Field(description="How the derived model was made: the recipe's first step; with one step, the "
                        "first method code, in the precedence order of docs/contracts.md, whose finding holds "
                        "(docs/diagnosis.md).")
    summary: str
    findings: list[Finding]
    recipe: list[str] = Field(default_factory=list, description=(
        "Ordered steps of the derivation, each a method code (training, then pruning, then the storing cast or "
        "quantization), e.g. [\"full_finetune\", \"precision_change\"]; one step for a single method."))
    direction: Direction = Field(default="unknown", description=(
        "b_from_a | a_from_b | unknown: which side was derived. Lossy steps, adapters and vocabulary growth show "
        "it; with a_from_b, method, recipe and evidence describe how A was made from B."))


Executor = Literal["local", "ray"]


class EngineInfo(_Model):
    version: str
    spectrum: SpectrumMode
    top_k: int
    device: str
    seconds: float
    bytes_read: int
    executor: Executor = Field("local", description="Where the work ran: this process, or a Ray cluster.")
    workers: int = Field(1, description="Processes the work was spread over.")
    tasks: int = Field(1, description="Units of work submitted (tensor groups of one comparison, or candidate "
                        "groups of a many-candidate pass).")
    retries: int = Field(0, description="Task attempts beyond the first: a worker that died, or a failing task "
                         "split to isolate the failure.")
    candidates_in_pass: int = Field(1, description="Candidates compared in the same pass, sharing one read of A.")


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


# ---- many candidates ------------------------------------------------------------------------------------

ManySortKey = Literal["mean_relative_change", "mean_cosine_sim", "oq", "profile_tag", "method", "candidate"]


class ManyRow(_Model):
    candidate: str = Field(description="The candidate spec as given.")
    report_id: str | None = Field(description="Its full report in the store (null on error).")
    error: str | None = Field(description="One line, when this candidate failed; null on success.")
    profile_tag: ProfileTag | None = None
    method: str | None = None
    recipe: list[str] | None = Field(default=None, description="Ordered step codes from the base to the candidate.")
    mean_relative_change: float | None = None
    mean_cosine_sim: float | None = None
    oq: float | None = Field(default=None, description="Weight-space O/Q ratio (null when undefined).")
    top_roles: list[str] = Field(default_factory=list,
                                 description="Roles with the largest mean relative change, most changed first.")


class SplitInfo(_Model):
    executor: Executor
    workers: int
    tasks: int
    retries: int
    seconds: float
    bytes_read: int = Field(description="Bytes actually read.")


class ManyEngineInfo(SplitInfo):
    base_reads: int = Field(description="Reads of base tensors by the pass (one per tensor and worker).")
    from_store: int = Field(description="Candidates answered from the store without reading anything.")


class CompareManyAnswer(_Model):
    base: str
    sort_by: ManySortKey
    rows: list[ManyRow]
    engine: ManyEngineInfo


class FindBaseCandidate(_Model):
    candidate: str = Field(description="The pool entry as given.")
    related: bool = Field(description="Its sampled weights are MODEL's (cosine above the threshold).")
    cosine_sim: float | None = Field(description="Mean cosine of the sampled weights of MODEL and the candidate.")
    relative_change: float | None = Field(
        description="Mean ||W_model - W_candidate|| / ||W_candidate|| over the sampled weights.")
    n_tensors: int = Field(description="Tensors sampled.")
    bytes_read: int = Field(description="Bytes of this candidate read by the screen.")
    evidence: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class ScreenInfo(_Model):
    roles: list[str]
    depths: list[float] = Field(description="Layers sampled, as fractions of the depth.")
    bytes_per_tensor: int = Field(description="At most this many bytes (a middle row range) per tensor and side.")
    related_cosine: float
    decision_margin: float = Field(description="How many times farther the runner-up must be for `found`.")
    model_bytes_read: int
    tensors: list[str] = Field(default_factory=list, description="The sampled tensors and row ranges (MODEL's "
                               "names); a candidate's evidence lists its own only where they differ.")


class FindBaseAnswer(_Model):
    model: str
    base: str | None = Field(description="The pool entry MODEL was derived from; set only when decision is found.")
    decision: Literal["found", "none", "ambiguous"]
    margin: float | None = Field(description="Runner-up's relative change / the nearest one's (null: fewer than "
                                 "two related, or MODEL is an exact copy).")
    candidates: list[FindBaseCandidate] = Field(description="Every pool entry, most likely first.")
    report_id: str | None = Field(description="The exact comparison of the base (A) with MODEL (B); null unless found.")
    screen: ScreenInfo
    engine: SplitInfo = Field(description="The screen's work (the exact comparison's is in its report).")
