"""Facts a source learns about a checkpoint that the diagnosis reads (no tensor data, no pipeline types).

sources/ fills them in; diagnosis/ reads them; neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdapterModule:
    """One LoRA-targeted tensor of a PEFT adapter: ΔW = scaling·B·A."""

    name: str  # the base tensor it changes
    rank: int  # r of this module (rank_pattern applied)
    alpha: float
    scaling: float
    numerical_rank: int  # rank of the r×r core's σ, above float64 resolution
    frob_norm: float  # ‖scaling·B·A‖_F
    top_singular_values: tuple[float, ...]  # the largest σ of scaling·B·A, descending


@dataclass(frozen=True)
class AdapterFacts:
    """A PEFT LoRA adapter as model B: its configuration and per-module core spectra."""

    r: int  # the config's default rank
    lora_alpha: float  # the config's default alpha
    use_rslora: bool
    target_modules: list[str] | str | None  # as adapter_config.json has it
    base_model_name_or_path: str | None
    modules: tuple[AdapterModule, ...]
    replaced: tuple[str, ...]  # base tensors the adapter file replaces whole (modules_to_save, biases)
    peft_type: str = "LORA"


@dataclass(frozen=True)
class BaseClaim:
    """What B says it derives from (its model card, or a PEFT adapter's config); lineage.py reads it."""

    bases: tuple[str, ...]  # as written (hub ids or paths)
    relation: str  # adapter | finetune | merge | quantized
    relation_stated: bool  # False: inferred from the files, the card names none
    origin: str  # "card" | "adapter_config"


@dataclass(frozen=True)
class PermutedGroup:
    """Hidden units of one layer that B holds in another order than A (engine/permutation.py)."""

    layer: int
    units: str  # "mlp" (intermediate units) | "heads" (attention heads)
    n_units: int
    n_moved: int  # units not at their own index
    min_aligned_cosine: float  # smallest cosine of a coupled tensor with A after undoing the permutation
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class PermutationFacts:
    """B's hidden units permuted against A's; the report's rows of these tensors compare the aligned weights."""

    groups: tuple[PermutedGroup, ...]
