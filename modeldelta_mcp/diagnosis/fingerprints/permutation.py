"""`permutation`: B's hidden units (MLP units, attention heads) are A's in another order.

The engine finds and undoes the permutation (engine/permutation.py) and hands its facts over; the rows
the other fingerprints read then compare the aligned weights, so this step comes first in the recipe and
the rest of the derivation (nothing, or a fine-tune) is read after it.
"""

from __future__ import annotations

from modeldelta_mcp.diagnosis.fingerprints.context import finding
from modeldelta_mcp.facts import PermutationFacts
from modeldelta_mcp.models import Finding


def permutation_finding(facts: PermutationFacts) -> Finding:
    layers = sorted({g.layer for g in facts.groups})
    units = sorted({g.units for g in facts.groups})
    moved = sum(g.n_moved for g in facts.groups)
    tensors = [t for g in facts.groups for t in g.tensors]
    worst = min(g.min_aligned_cosine for g in facts.groups)
    what = " and ".join({"mlp": "MLP units", "heads": "attention heads"}[u] for u in units)
    return finding(
        "permutation", "info", "Hidden units permuted",
        f"{what} of {len(layers)} layer(s) ({', '.join(map(str, layers))}) are A's in another order ({moved} units "
        f"moved); the metrics compare the weights after undoing it (smallest aligned cosine {worst:.4f}).",
        {"layers": layers, "units": units, "n_units_moved": moved, "n_tensors": len(tensors),
         "tensors": tensors[:50], "min_aligned_cosine": worst},
        metric_value=len(layers))
