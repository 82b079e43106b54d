"""Assemble the diagnostics block: seed profile and findings, method fingerprints, summary."""

from __future__ import annotations

from modeldelta_mcp.diagnosis import seed_thresholds
from modeldelta_mcp.diagnosis.profiles import profile_tag, seed_findings
from modeldelta_mcp.diagnosis.recipe import derive, direction, permuted_first
from modeldelta_mcp.facts import AdapterFacts, PermutationFacts
from modeldelta_mcp.models import Diagnostics, Finding, ModuleDelta, ProfileTag, QuantGroup

PROFILE_PHRASE = {
    "identical": "bit-identical to",
    "surgical": "surgically fine-tuned with minimal weight changes",
    "standard": "fine-tuned with standard SFT intensity",
    "heavy": "heavily fine-tuned with significant weight modifications",
    "extreme": "extensively modified with extreme weight changes",
}


def seed_set(mods: list[ModuleDelta]) -> list[ModuleDelta]:
    """The seed's module set (>= 1000 parameters); all modules when a tiny model has none."""
    chosen = [m for m in mods if m.in_profile]
    return chosen or mods


def nonfinite_finding(mods: list[ModuleDelta]) -> Finding | None:
    bad = [m for m in mods if m.nonfinite]
    if not bad:
        return None
    total = sum(m.nonfinite for m in bad)
    return Finding(code="nonfinite", category="integrity", severity="warning", title="NaN/Inf weights",
                   detail=f"{total} NaN/Inf entries in {len(bad)} tensors (e.g. {bad[0].name}); they were "
                   "zeroed for the metrics.",
                   metric_value=total, evidence={"tensors": [m.name for m in bad][:20], "n_entries": total})


def diagnose(mods: list[ModuleDelta], model_a: str, model_b: str,
             adapter: AdapterFacts | None = None, quantization: list[QuantGroup] | None = None,
             permutation: PermutationFacts | None = None) -> Diagnostics:
    """`adapter`: the facts of a PEFT adapter B (sources/peft_adapter.py), None otherwise; `quantization`: the
    schemes A's and B's files declare (CheckpointInfo.quantization); `permutation`: hidden units of B the engine
    put back in A's order (engine/permutation.py; `mods` then compare the aligned weights)."""
    seed_mods = seed_set(mods)
    way, derivation = direction(mods, adapter, derive(mods, adapter, quantization), quantization)
    derivation = permuted_first(derivation, permutation)
    findings = derivation.findings
    recipe = derivation.recipe
    method = recipe[0]
    nonfinite = nonfinite_finding(mods)
    mean_rel = sum(m.frob_norm_relative for m in seed_mods) / max(1, len(seed_mods))
    mean_cos = sum(min(1.0, m.cosine_sim) for m in seed_mods) / max(1, len(seed_mods))
    total = sum(m.frob_norm**2 for m in seed_mods) ** 0.5
    tag: ProfileTag
    if recipe in (["identical"], ["permutation"]):  # bit-equal, or bit-equal once the permutation is undone
        tag = "identical"
        findings = findings + ([nonfinite] if nonfinite else [])
    else:
        tag = profile_tag(mean_rel)
        findings = ([nonfinite] if nonfinite else []) + findings + seed_findings(seed_mods)
    svd = [m for m in seed_mods if m.has_svd and m.concentration_top_k]
    conc_desc = ""
    if svd and tag != "identical":
        conc = sum(m.concentration_top_k or 0.0 for m in svd) / len(svd)
        if conc > seed_thresholds.CONC_LOW_RANK:
            conc_desc = " Changes are partially low-rank (LoRA-like structure)."
        elif conc < seed_thresholds.CONC_FULL_RANK:
            conc_desc = " Changes are full-rank: the entire parameter space was used."
    primary = next((f for f in findings if f.code == method), None)
    if primary is not None:
        method_desc = f" Method: {primary.title} ({method})."
    else:
        method_desc = f" No method fingerprint matched; reported as {method} by default."
    if len(recipe) > 1:
        method_desc += f" Recipe: {' → '.join(recipe)}."
    if way == "a_from_b":
        method_desc += f" Direction: {model_a} was derived from {model_b} (the method and recipe describe A)."
    if recipe == ["permutation"]:
        summary = (f"{model_b} is {model_a} with hidden units permuted (the same function): once the permutation "
                   f"is undone every compared tensor is bit-equal.{method_desc}")
    elif tag == "identical":
        summary = f"{model_b} is {PROFILE_PHRASE[tag]} {model_a}: every compared tensor is bit-equal."
    else:
        summary = (
            f"{model_b} was {PROFILE_PHRASE[tag]} relative to {model_a}. "
            f"Mean relative change: {mean_rel:.4f}, cosine similarity: {mean_cos:.5f}, "
            f"total ||ΔW||: {total:.2f}.{conc_desc}{method_desc}"
        )
    return Diagnostics(profile_tag=tag, method=method, summary=summary, findings=findings, recipe=recipe,
                       direction=way)
