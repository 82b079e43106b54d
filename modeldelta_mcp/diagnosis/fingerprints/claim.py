"""`base_claim` (category `claim`): does the weight comparison agree with what B's card says it is?

Reads the claim (facts.BaseClaim, filled by lineage.py: claimed bases, relation) and the method findings
already made from the ModuleDelta rows. Never a method, never in the precedence list. Verdicts:

- contradicted: B is unrelated to the claimed base (`unrelated_models`: cosines inside the permutation
  null), or bit-identical to it while claiming a finetune, adapter or quantization (nothing was done);
- consistent: related and changed, and, for `quantized`, a cast or quantization grid was found;
- cannot_tell: A is not the claimed base, no matrix was compared (a filter kept vectors only, whose
  cosines are no test of relatedness), or a quantization claim without a grid found (the grid tests do
  not cover every scheme, so its absence is no proof).
"""

from __future__ import annotations

from typing import Any

from modeldelta_mcp.diagnosis.fingerprints.context import is_matrix
from modeldelta_mcp.facts import BaseClaim
from modeldelta_mcp.models import Finding, ModuleDelta, Severity

QUANTIZED_CODES = ("quantization_roundtrip", "precision_change")


def _same_model(claimed: str, compared: str) -> bool:
    """A hub id matches with or without a revision; a path by its resolved form."""
    from pathlib import Path

    def norm(s: str) -> str:
        p = Path(s).expanduser()
        return str(p.resolve()) if p.exists() else s.split("@", 1)[0].strip().lower()

    return norm(claimed) == norm(compared)


def _verdict(claim: BaseClaim, mods: list[ModuleDelta], codes: set[str], mean_cos: float) -> tuple[str, str]:
    relation = claim.relation
    if "unrelated_models" in codes:
        return "contradicted", f"weights unrelated to the base: mean cosine {mean_cos:.2f} over the matrices"
    if not any(is_matrix(m) for m in mods):
        return "cannot_tell", "no weight matrix was compared (vector cosines do not test relatedness)"
    if "identical" in codes:
        if relation == "merge":
            return "cannot_tell", "bit-identical to this base (a merge weighted wholly on it, or a copy)"
        return "contradicted", f"bit-identical to the base: no {relation} changed any weight"
    if relation == "quantized":
        found = sorted(codes.intersection(QUANTIZED_CODES))
        if found:
            return "consistent", f"related to the base and on a reduced-precision grid ({', '.join(found)})"
        return "cannot_tell", "related to the base, but no quantization or cast grid was found"
    return "consistent", f"related to the base (mean cosine {mean_cos:.3f}) and changed"


def base_claim(claim: BaseClaim | None, model_a: str, mods: list[ModuleDelta],
               findings: list[Finding]) -> Finding | None:
    if claim is None or not mods:
        return None
    bases = ", ".join(claim.bases)
    matrices = [m for m in mods if is_matrix(m)] or mods
    mean_cos = sum(min(1.0, m.cosine_sim) for m in matrices) / len(matrices)
    evidence: dict[str, Any] = {
        "claimed_base": claim.bases[0] if len(claim.bases) == 1 else list(claim.bases),
        "claimed_relation": claim.relation, "relation_stated": claim.relation_stated, "claim_source": claim.origin,
        "compared_base": model_a, "mean_cosine_sim": mean_cos,
        "min_cosine_sim": min(m.cosine_sim for m in matrices), "n_tensors": len(mods),
        "n_changed": sum(1 for m in mods if not m.identical),
    }
    if not any(_same_model(b, model_a) for b in claim.bases):
        verdict, why = "cannot_tell", f"compared against {model_a}, not the claimed base"
    else:
        verdict, why = _verdict(claim, mods, {f.code for f in findings if f.category == "method"}, mean_cos)
    evidence["verdict"] = verdict
    severity: Severity = "warning" if verdict == "contradicted" else "info"
    relation = claim.relation if claim.relation_stated else f"{claim.relation} (inferred)"
    return Finding(code="base_claim", category="claim", severity=severity,
                   title=f"Claimed base: {verdict.replace('_', ' ')}",
                   detail=f"Claims {relation} of {bases}; {why}.", metric_value=verdict, evidence=evidence)
