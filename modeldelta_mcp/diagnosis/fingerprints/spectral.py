"""Spectral fingerprints: i.i.d. noise (Marchenko–Pastur), exact low rank (LoRA and DoRA merges), dense training."""

from __future__ import annotations

import math

from modeldelta_mcp.diagnosis import marchenko_pastur
from modeldelta_mcp.diagnosis.fingerprints.context import (
    BULK_EDGE_SLACK,
    BULK_QUANTILE_FLOOR,
    BULK_QUANTILE_SLACK,
    VOCAB_ROLES,
    Context,
    family,
    finding,
    is_low_rank,
    nnz,
    numel,
    numerical_rank,
    rescaled_rank,
    shape2d,
    sorted_roles,
)
from modeldelta_mcp.models import Finding, ModuleDelta
from modeldelta_mcp.numerics import DECILES

# Bulk quantiles of an i.i.d. matrix match the MP law up to O(1/p) (eigenvalue spacing, p = min side):
# measured 0.028 at p = 32 and 0.005 at p = 384 (relative to the edge); allowed: 0.02 + 2/p.
MP_QUANTILE_FLOOR = BULK_QUANTILE_FLOOR
MP_QUANTILE_SLACK = BULK_QUANTILE_SLACK
# The top σ of an i.i.d. matrix exceeds the MP edge only by Tracy–Widom fluctuations, O(p^(-2/3));
# learned structure puts outliers well above it. Allowed: edge·(1 + 2·p^(-2/3)).
MP_EDGE_SLACK = BULK_EDGE_SLACK
# Noise moves entries; when half the changes or more set weights to zero, the delta is a zeroing.
NOISE_MAX_ZEROED_SHARE = 0.5
# A trained dense update moves (nearly) every entry; masks and drops leave most unchanged.
DENSE_MIN_DENSITY = 0.5


def mp_fit(m: ModuleDelta) -> dict | None:
    """How far Δ's spectrum is from MP with the same variance: top σ / edge and worst decile error."""
    deciles = m.forensics.deciles()
    if not m.top_singular_values or deciles is None:
        return None
    rows, cols = shape2d(m)
    p = min(rows, cols)
    tau = m.frob_norm / math.sqrt(rows * cols)
    e = marchenko_pastur.edge(rows, cols, tau)
    if e <= 0:
        return None
    theory = marchenko_pastur.sigma_quantiles(rows, cols, DECILES)
    err = max(abs(d / e - t) for d, t in zip(deciles, theory, strict=True))
    top = m.top_singular_values[0] / e
    ok = err <= MP_QUANTILE_FLOOR + MP_QUANTILE_SLACK / p and top <= 1 + MP_EDGE_SLACK * p ** (-2 / 3)
    return {"top_over_edge": top, "decile_error": err, "ok": ok, "tau": tau}


def detect_noise(ctx: Context) -> Finding | None:
    fits = [(m, mp_fit(m)) for m in ctx.changed_matrices]
    if not fits or any(f is None for _, f in fits):
        return None
    moved = sum(nnz(m) for m, _ in fits)
    if sum(m.forensics.n_pruned or 0.0 for m, _ in fits) >= NOISE_MAX_ZEROED_SHARE * moved:
        return None  # a delta of -A on zeroed entries (pruning) inherits A's noise-like small values
    if not all(f["ok"] for _, f in fits if f):
        return None
    rel = sorted(f["tau"] / ((m.forensics.norm_a or 0.0) / math.sqrt(max(1.0, numel(m)))) for m, f in fits if f)
    top = max(f["top_over_edge"] for _, f in fits if f)
    err = max(f["decile_error"] for _, f in fits if f)
    return finding(
        "noise_injection", "warning", "Random noise added",
        f"The deltas of all {len(fits)} changed matrices have the singular values of i.i.d. noise: they fill the "
        f"Marchenko–Pastur bulk (worst decile off by {err:.3f} of the edge) with no outlier above its edge (top σ at "
        f"{top:.3f}× the edge). No learned structure; noise std ≈ {rel[len(rel) // 2]:.2g} × the weights' RMS.",
        {"n_matrices": len(fits), "max_top_over_edge": top, "max_decile_error": err,
         "noise_relative_std": rel[len(rel) // 2], "roles": sorted_roles([m for m, _ in fits])},
        metric_value=rel[len(rel) // 2],
    )


def detect_lora_merge(ctx: Context) -> Finding | None:
    if ctx.adapter is not None or not ctx.changed_matrices:
        return None  # an adapter is reported as lora_adapter
    # DoRA: a matrix whose delta is full rank but low rank once its rows are rescaled (the magnitude vector)
    rescaled = {m.name: r for m in ctx.changed_matrices if (r := rescaled_rank(m)) is not None}
    ranks = {m.name: rescaled.get(m.name, numerical_rank(m)) for m in ctx.changed_matrices}

    def low_rank(m: ModuleDelta) -> bool:
        return ranks[m.name] not in (None, 0) and (m.name in rescaled or bool(is_low_rank(m)))

    # PEFT's modules_to_save (the LM head; the embeddings when tokens were added) are trained in full beside the
    # adapters: with a low-rank body, dense vocabulary matrices are those modules, not a full fine-tune.
    body = [m for m in ctx.changed_matrices if m.role not in VOCAB_ROLES]
    saved = [m for m in ctx.changed_matrices if m.role in VOCAB_ROLES and not low_rank(m)] if body else []
    adapted = [m for m in ctx.changed_matrices if m not in saved]
    if not all(low_rank(m) for m in adapted):
        return None
    by_role: dict[str, int] = {}
    for m in adapted:
        by_role[m.role] = max(by_role.get(m.role, 0), ranks[m.name] or 0)
    rank = max(by_role.values())
    touched = sorted(by_role)
    untouched = sorted({m.role for m in ctx.mods} - {m.role for m in ctx.changed})
    vectors = [m for m in ctx.changed if m not in adapted]
    # the cliff of a rescaled matrix's full spectrum says nothing (its delta is full rank)
    cliffs = [m.forensics.sv_cliff for m in adapted
              if m.forensics.sv_cliff is not None and m.name not in rescaled]
    layers = sorted({m.layer for m in adapted if m.layer is not None})
    evidence = {"rank": rank, "ranks_by_role": by_role, "roles": touched, "untouched_roles": untouched,
                "n_modules": len(adapted), "layers": layers, "n_vectors_changed": len(vectors),
                "min_cliff": min(cliffs) if cliffs else None, "variant": "dora" if rescaled else "lora"}
    also = ""
    if saved:
        evidence["modules_to_save"] = [m.name for m in saved]
        also = (f" {', '.join(sorted_roles(saved))} trained in full beside the adapter (PEFT modules_to_save: "
                f"{len(saved)} dense vocabulary matrices).")
    if rescaled:
        return finding(
            "lora_merge", "info", f"DoRA merged into the weights (rank {rank})",
            f"The {len(adapted)} changed matrices ({', '.join(touched)}) are a rank <= {rank} update "
            f"whose rows were then rescaled (DoRA's magnitude vector): the rescale makes {len(rescaled)} of the deltas "
            f"full rank, and less a per-row rescale of A their sampled rows have exact rank <= {rank} at the rounding "
            f"floor of the stored dtype, while {len(untouched)} other roles are untouched. A merged DoRA adapter."
            + also,
            evidence, metric_value=rank,
        )
    return finding(
        "lora_merge", "info", f"LoRA merged into the weights (rank {rank})",
        f"The {len(adapted)} changed matrices ({', '.join(touched)}) have exact low rank <= {rank}: their "
        f"singular values drop by a factor of {min(cliffs) if cliffs else float('nan'):.3g} or more to the rounding "
        f"floor of the stored dtype, while {len(untouched)} other roles are untouched. A merged low-rank adapter."
        + also,
        evidence, metric_value=rank,
    )


def _dense_learned(m: ModuleDelta) -> bool:
    density = nnz(m) / max(1.0, numel(m))
    fit = mp_fit(m)
    return (is_low_rank(m) is False and rescaled_rank(m) is None and density >= DENSE_MIN_DENSITY
            and not (fit and fit["ok"]))


def detect_full_finetune(ctx: Context) -> Finding | None:
    body = [m for m in ctx.changed_matrices if m.role not in VOCAB_ROLES] or ctx.changed_matrices
    if not body:
        return None
    dense = [m for m in body if _dense_learned(m)]
    if 2 * len(dense) <= len(body):  # a majority of the changed matrices
        return None
    present = {family(m.role) for m in ctx.matrices} & {"attention", "mlp"}
    changed = {family(m.role) for m in dense} & {"attention", "mlp"}
    if changed != present:
        return None
    fracs = sorted((numerical_rank(m) or 0) / min(shape2d(m)) for m in dense)
    density = sum(nnz(m) for m in dense) / sum(numel(m) for m in dense)
    return finding(
        "full_finetune", "info", "Full fine-tune (dense, high-rank updates)",
        f"{len(dense)} of {len(body)} changed matrices got dense ({density:.1%} of entries moved), full-rank "
        f"updates (median numerical rank {fracs[len(fracs) // 2]:.0%} of the dimension) with learned structure, "
        f"across {' and '.join(sorted(changed)) or 'all'} modules.",
        {"n_matrices": len(dense), "n_changed_matrices": len(body), "module_types": sorted(changed),
         "median_rank_fraction": fracs[len(fracs) // 2], "density": density, "roles": sorted_roles(dense)},
        metric_value=fracs[len(fracs) // 2],
    )
