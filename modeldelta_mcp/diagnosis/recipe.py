"""Composed derivations: the ordered steps from A to B, and which side was derived from which.

A model on the hub is rarely made in one step: it is trained (fine-tune, LoRA merge, BitFit...), maybe
pruned, then stored in a half-precision format or quantized. Each later step leaves its own footprint
on B and hides part of the earlier ones, so the steps are peeled off from the last:

1. storage: a quantizer's grid (`quantization_roundtrip`) or a half-precision cast (`precision_change`);
   the tensors it alone explains (quantized, or only rounded) count as unchanged afterwards;
2. `pruning`: new exact zeros (not in quantized tensors: a quantizer's zero level is not pruning);
   tensors whose every change is a zeroing count as unchanged afterwards;
3. training: the fingerprints of the remaining changes, the first of the precedence list.

`recipe` lists them in the order they were applied (training, pruning, storage), after `permutation`
when the engine found and undid a permutation of hidden units (the rows then compare aligned weights). Every step is a
finding with its full evidence. `direction`: lossy steps (casts, quantization, pruning), adapters and
vocabulary growth only go one way, so the pair is also read with A and B exchanged; when only that
reading shows a lossy step, A was derived from B and the diagnosis describes A's derivation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modeldelta_mcp.diagnosis.fingerprints import DETECTORS, ENGINE_STEPS, PRECEDENCE, TRANSFORMS
from modeldelta_mcp.diagnosis.fingerprints.context import Context, finding, nnz, numel
from modeldelta_mcp.diagnosis.fingerprints.declared_quant import detect_declared_quantization
from modeldelta_mcp.diagnosis.fingerprints.permutation import permutation_finding
from modeldelta_mcp.diagnosis.fingerprints.sparsity import detect_pruning
from modeldelta_mcp.diagnosis.fingerprints.transforms import cast_step, only_rounded, quantization_step
from modeldelta_mcp.facts import AdapterFacts, PermutationFacts
from modeldelta_mcp.models import Direction, Finding, ForensicCounters, ModuleDelta, QuantGroup

# Steps that lose information: they can only have been applied to the derived side.
LOSSY = ("precision_change", "quantization_roundtrip", "pruning")
# Fingerprints of how weights were changed before any lossy step (oq_ratio is informative only).
TRAINING = tuple(c for c in PRECEDENCE if c not in TRANSFORMS and c not in ENGINE_STEPS and c != "pruning")
# Relative change guard of the mirrored reading (the seed's own ratio guard, engine/accumulate.py).
REL_EPS = 1e-12


@dataclass
class Derivation:
    recipe: list[str]
    findings: list[Finding]  # method findings, in precedence order
    lossy: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _as_unchanged(mods: list[ModuleDelta], names: set[str]) -> list[ModuleDelta]:
    """The rows with the named tensors read as untouched (a later step alone explains their change)."""
    return [m.model_copy(update={"identical": True}) if m.name in names else m for m in mods]


def _ordered(found: dict[str, Finding]) -> list[Finding]:
    order = {c: i for i, c in enumerate([*PRECEDENCE, "oq_ratio"])}
    return sorted(found.values(), key=lambda f: order.get(f.code, len(order)))


def derive(mods: list[ModuleDelta], adapter: AdapterFacts | None = None,
           quantization: list[QuantGroup] | None = None) -> Derivation:
    """Recipe and method findings of B as derived from A; `quantization`: the schemes the files declare."""
    ctx = Context(mods, adapter, list(quantization or []))
    found: dict[str, Finding] = {}
    for code in ("identical", "unrelated_models"):
        f = DETECTORS[code](ctx)
        if f is not None:
            oq = DETECTORS["oq_ratio"](ctx)
            return Derivation([code], [f] + ([oq] if oq else []), False)
    steps_after: list[str] = []
    explained: set[str] = set()
    quantized: frozenset[str] = frozenset()
    quant = quantization_step(ctx) if adapter is None else None
    declared = detect_declared_quantization(ctx)
    if declared is not None:  # B's files declare a scheme (read by sources/quantized): the step, checked
        if quant is not None:
            declared.evidence["grid"] = quant.finding.evidence
        found["quantization_roundtrip"] = declared
        groups = {g.label for g in ctx.quantization}
        quantized = frozenset(m.name for m in ctx.mods if m.quant_b in groups) | (
            frozenset(m.name for m in quant.quantized) if quant is not None else frozenset())
        explained |= quantized | ({m.name for m in quant.cast} if quant is not None else set())
        # the unquantized tensors stored in a half-precision dtype: rounding them is part of storing B
        explained |= {m.name for m in ctx.changed if m.name not in quantized and only_rounded(m)}
        steps_after.append("quantization_roundtrip")
    elif quant is not None:
        found["quantization_roundtrip"] = quant.finding
        quantized = frozenset(m.name for m in quant.quantized)
        explained |= quantized | {m.name for m in quant.cast}
        steps_after.append("quantization_roundtrip")
    else:
        cast = cast_step(ctx) if adapter is None else None
        if cast is not None:
            found["precision_change"] = cast.finding
            explained |= {m.name for m in cast.cast}
            steps_after.append("precision_change")
    pruned = detect_pruning(ctx, exclude=quantized)
    if pruned is not None:
        found["pruning"] = pruned
        names = set(pruned.evidence["tensors"])
        # tensors whose every change is a zeroing: pruning alone explains them
        explained |= {m.name for m in ctx.changed if m.name in names and
                      (m.forensics.n_nonzero_delta or 0) <= (m.forensics.n_pruned or 0)}
        steps_after.insert(0, "pruning")
    rest = Context(_as_unchanged(mods, explained), adapter, ctx.quantization) if explained else ctx
    training: dict[str, Finding] = {}
    if rest.changed or any(m.rows_a != m.rows_b for m in mods):
        for code in TRAINING:
            f = DETECTORS[code](rest)
            if f is not None:
                training[code] = f
    recipe = list(steps_after)
    if training:
        first = next(c for c in PRECEDENCE if c in training)
        recipe.insert(0, first)
    elif rest.changed and steps_after:
        # changed beyond the later steps (norms, embeddings next to quantized matrices), no fingerprint matched
        training["full_finetune"] = _changed_beyond(rest.changed, steps_after)
        recipe.insert(0, "full_finetune")
    if not recipe:
        recipe = ["full_finetune"]
    found.update(training)
    oq = DETECTORS["oq_ratio"](ctx)
    if oq is not None:
        found["oq_ratio"] = oq
    return Derivation(recipe, _ordered(found), any(s in LOSSY for s in recipe))


def permuted_first(derivation: Derivation, facts: PermutationFacts | None) -> Derivation:
    """The permutation the engine undid as the first step; the rows already compare the aligned weights, so
    `identical` (bit-identical with nothing undone) gives way to it and any other step follows it."""
    if facts is None:
        return derivation
    found = {f.code: f for f in derivation.findings if f.code != "identical"}
    found["permutation"] = permutation_finding(facts)
    rest = [s for s in derivation.recipe if s != "identical"]
    return Derivation(["permutation", *rest], _ordered(found), derivation.lossy, derivation.extra)


def _changed_beyond(changed: list[ModuleDelta], steps: list[str]) -> Finding:
    roles = sorted({m.role for m in changed})
    return finding(
        "full_finetune", "info", "Trained before " + " and ".join(steps),
        f"{len(changed)} tensors ({', '.join(roles)}) changed in ways {' and '.join(steps)} do not explain (no "
        "training fingerprint can be read on them alone): B was trained from A first.",
        {"n_tensors": len(changed), "roles": roles, "tensors": [m.name for m in changed][:50],
         "density": sum(nnz(m) for m in changed) / max(1.0, sum(numel(m) for m in changed)), "later_steps": steps},
        metric_value=len(changed))


def mirrored(m: ModuleDelta) -> ModuleDelta:
    """The row read with A and B exchanged."""
    f: ForensicCounters = m.forensics.mirrored()
    return m.model_copy(update={
        "dtype_a": m.dtype_b, "dtype_b": m.dtype_a, "rows_a": m.rows_b, "rows_b": m.rows_a, "forensics": f,
        "quant_a": m.quant_b, "quant_b": m.quant_a,
        "frob_norm_relative": m.frob_norm / ((f.norm_a or 0.0) + REL_EPS)})


def direction(mods: list[ModuleDelta], adapter: AdapterFacts | None, forward: Derivation,
              quantization: list[QuantGroup] | None = None) -> tuple[Direction, Derivation]:
    """b_from_a | a_from_b | unknown, and the derivation in that direction (forward when unknown)."""
    if adapter is not None or any(m.quant_b for m in mods):  # an adapter, or B's files declare a quantization
        return "b_from_a", forward
    if any(m.quant_a for m in mods):  # A's files declare one (and B's do not)
        return "a_from_b", derive([mirrored(m) for m in mods], None, quantization)
    if forward.recipe[0] in ("identical", "unrelated_models"):
        return "unknown", forward
    rows = [(a, b) for m in mods if (a := m.rows_a) is not None and (b := m.rows_b) is not None and a != b]
    if rows:  # vocabulary grows when a model is extended
        return ("b_from_a", forward) if rows[0][1] > rows[0][0] else ("a_from_b", derive([mirrored(m) for m in mods]))
    if any(m.forensics.a_on_float16_grid is None for m in mods if not m.identical):
        return ("b_from_a" if forward.lossy else "unknown"), forward  # a report without A's counters
    backward = derive([mirrored(m) for m in mods])
    if forward.lossy and not backward.lossy:
        return "b_from_a", forward
    if backward.lossy and not forward.lossy:
        return "a_from_b", backward
    return "unknown", forward
