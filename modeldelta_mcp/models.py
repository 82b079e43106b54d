"""Pydantic models: the JSON contracts of every answer and of the report (docs/contracts.md).

Fields only grow; never rename. `schemas/` (`python -m modeldelta_mcp.schemas`) and docs/contracts.md
(`python -m modeldelta_mcp.contracts`) are generated from these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, WithJsonSchema, model_serializer

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


class ForensicCounters(_Model):
    """Counters behind the method fingerprints (docs/diagnosis.md), accumulated by the engine chunk by chunk.

    A counter that was not measured for a tensor (no spectrum, no sampled rows, a granularity the width
    does not divide) is None and absent from the JSON.
    """

    numel: Counter = _counter("Entries compared.")
    n_zero_delta: Counter = _counter("Entries exactly unchanged.")
    max_abs_delta: Counter = _counter("Largest |B - A|.")
    norm_a: Counter = _counter("Frobenius norm of A (float64).")
    norm_b: Counter = _counter("Frobenius norm of B (float64).")
    n_nonzero_delta: Counter = _counter("Entries that changed.")
    n_zero_b: Counter = _counter("Zeros in B.")
    n_pruned: Counter = _counter("Zeros in B where A was not zero.")
    rms_a_pruned: Counter = _counter("RMS of A over the entries zeroed in B.")
    sum_a: Counter = _counter("Sum of A's entries (float64; permutation null).")
    sum_b: Counter = _counter("Sum of B's entries (float64; permutation null).")
    crc_a: Counter = _counter("CRC-32 of A's stored bytes (exact-copy fingerprint).")
    crc_b: Counter = _counter("CRC-32 of B's stored bytes (exact-copy fingerprint).")
    unit_roundoff_b: Counter = _counter(
        "u of the coarsest float grid holding all of B (bf16 2^-9, fp16 2^-11, fp32 2^-24).")
    active_rows: Counter = _counter("Rows (of a chunk) with any change.")
    active_entries: Counter = _counter("Entries of the active rows.")
    zero_pairs_active: Counter = _counter("Horizontally adjacent unchanged pairs inside active rows.")
    pairs_active: Counter = _counter("Horizontally adjacent pairs inside active rows.")
    b_on_float16_grid: Counter = _counter("1 when every entry of B is exactly representable in float16.")
    n_rounded_float16: Counter = _counter(
        "Changed entries where A was off the float16 grid and B is a neighbour of A on it (one ULP).")
    b_on_bfloat16_grid: Counter = _counter("1 when every entry of B is exactly representable in bfloat16.")
    n_rounded_bfloat16: Counter = _counter(
        "Changed entries where A was off the bfloat16 grid and B is a neighbour of A on it (one ULP).")
    q_row_n: Counter = _counter("k-bit grid test per row on B's first rows: groups tested.")
    q_row_grid: Counter = _counter("Groups (per row) on a uniform grid.")
    q_row_bits: Counter = _counter("Bits spanned by the grids (per row).")
    q_row_levels: Counter = _counter("Most distinct values in one group (per row).")
    q_row_size: Counter = _counter("Entries per group (per row).")
    q_g128_n: Counter = _counter("k-bit grid test per group of 128 on B's first rows: groups tested.")
    q_g128_grid: Counter = _counter("Groups (per group of 128) on a uniform grid.")
    q_g128_bits: Counter = _counter("Bits spanned by the grids (per group of 128).")
    q_g128_levels: Counter = _counter("Most distinct values in one group (per group of 128).")
    q_g128_size: Counter = _counter("Entries per group (per group of 128).")
    q_g64_n: Counter = _counter("k-bit grid test per group of 64 on B's first rows: groups tested.")
    q_g64_grid: Counter = _counter("Groups (per group of 64) on a uniform grid.")
    q_g64_bits: Counter = _counter("Bits spanned by the grids (per group of 64).")
    q_g64_levels: Counter = _counter("Most distinct values in one group (per group of 64).")
    q_g64_size: Counter = _counter("Entries per group (per group of 64).")
    q_g32_n: Counter = _counter("k-bit grid test per group of 32 on B's first rows: groups tested.")
    q_g32_grid: Counter = _counter("Groups (per group of 32) on a uniform grid.")
    q_g32_bits: Counter = _counter("Bits spanned by the grids (per group of 32).")
    q_g32_levels: Counter = _counter("Most distinct values in one group (per group of 32).")
    q_g32_size: Counter = _counter("Entries per group (per group of 32).")
    sv_floor: Counter = _counter("Rounding floor of the numerical rank of Δ.")
    sv_rank: Counter = _counter("Numerical rank of Δ above the floor (exact spectrum).")
    sv_min: Counter = _counter("Smallest singular value of Δ.")
    sv_q10: Counter = _counter("10th percentile of the singular values of Δ.")
    sv_q20: Counter = _counter("20th percentile of the singular values of Δ.")
    sv_q30: Counter = _counter("30th percentile of the singular values of Δ.")
    sv_q40: Counter = _counter("40th percentile of the singular values of Δ.")
    sv_q50: Counter = _counter("50th percentile of the singular values of Δ.")
    sv_q60: Counter = _counter("60th percentile of the singular values of Δ.")
    sv_q70: Counter = _counter("70th percentile of the singular values of Δ.")
    sv_q80: Counter = _counter("80th percentile of the singular values of Δ.")
    sv_q90: Counter = _counter("90th percentile of the singular values of Δ.")
    sv_cliff: Counter = _counter("σ_r / σ_(r+1) at the numerical rank r.")
    quant_b: QuantGrid | None = Field(default=None, description="Quantizer grid of B's sampled rows, if any.")
    quant_a: QuantGrid | None = Field(default=None, description="Quantizer grid of A's sampled rows, if any.")
    unit_roundoff_a: Counter = _counter("u of the coarsest float grid holding all of A.")
    a_on_float16_grid: Counter = _counter("1 when every entry of A is exactly representable in float16.")
    n_rounded_float16_a: Counter = _counter(
        "Changed entries where B was off the float16 grid and A is a neighbour of B on it (A cast from B).")
    a_on_bfloat16_grid: Counter = _counter("1 when every entry of A is exactly representable in bfloat16.")
    n_rounded_bfloat16_a: Counter = _counter(
        "Changed entries where B was off the bfloat16 grid and A is a neighbour of B on it (A cast from B).")
    n_zero_a: Counter = _counter("Zeros in A (counted once a strided probe of A shows zeros).")
    n_pruned_a: Counter = _counter("Zeros in A where B is not zero.")
    rms_b_pruned_a: Counter = _counter("RMS of B over the entries zero in A.")
    nm_2_4_share: Counter = _counter("Share of groups of 4 along the input dim with >= 2 new zeros in B.")
    nm_4_8_share: Counter = _counter("Share of groups of 8 along the input dim with >= 4 new zeros in B.")
    zero_rows_b: Counter = _counter("Rows entirely zero in B that were not in A.")
    zero_row_runs: Counter = _counter("Maximal runs of consecutive such rows.")
    zero_cols_b: Counter = _counter("Columns entirely zero in B (tensors with new zeros).")
    zero_col_runs: Counter = _counter("Maximal runs of consecutive zero columns.")
    masked_rank: Counter = _counter(
        "Rank of B - A on the entries B kept, in the sampled rows (tensors pruned after another change).")

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
            "zero_pairs_active", "pairs_active", "sv_floor", "sv_rank", "sv_min", *DECILE_KEYS, "sv_cliff")}
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
