"""The seed's magnitude profile and finding categories, as pure functions over ModuleDelta rows."""

from __future__ import annotations

import math

from modeldelta_mcp.diagnosis import seed_thresholds
from modeldelta_mcp.models import Finding, ModuleDelta, ProfileTag, Severity

ATTN_ROLES = {"attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv"}
MLP_ROLES = {"mlp_gate", "mlp_up", "mlp_down", "mlp_gate_up"}
HEAD_ROLES = {"head", "embed"}
# The seed has two readings of the attention/MLP ratio (balanced above ATTN_MLP_BALANCED, MLP-heavy
# below). Beyond it, attention changing more than twice as much as the MLP is no longer "balanced":
# typically adapters on attention projections only (LoRA on q/v), with the MLP untouched.
ATTN_HEAVY_RATIO = 2.0


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def _finding(code: str, text: tuple[Severity, str, str], value: float, evidence: dict) -> Finding:
    """A seed finding whose category is its code; text is (severity, title, detail)."""
    severity, title, detail = text
    return Finding(code=code, category=code, severity=severity, title=title, detail=detail, metric_value=value,
                   evidence=evidence)


def profile_tag(mean_rel: float) -> ProfileTag:
    if mean_rel < seed_thresholds.FROB_SURGICAL:
        return "surgical"
    if mean_rel < seed_thresholds.FROB_STANDARD:
        return "standard"
    if mean_rel < seed_thresholds.FROB_HEAVY:
        return "heavy"
    return "extreme"


def layer_norms(mods: list[ModuleDelta]) -> dict[int, float]:
    acc: dict[int, float] = {}
    for m in mods:
        if m.layer is not None:
            acc[m.layer] = acc.get(m.layer, 0.0) + m.frob_norm**2
    return {k: math.sqrt(v) for k, v in sorted(acc.items())}


def u_shape_ratio(norms: dict[int, float]) -> float:
    layers = sorted(norms)
    n = len(layers)
    q1 = sum(norms[x] for x in layers[: n // 4]) / max(1, n // 4)
    q4 = sum(norms[x] for x in layers[3 * n // 4:]) / max(1, n - 3 * n // 4)
    mid = sum(norms[x] for x in layers[n // 4: 3 * n // 4]) / max(1, len(layers[n // 4: 3 * n // 4]))
    return (q1 + q4) / (2 * mid + 1e-12)


def magnitude_finding(mean_rel: float) -> Finding:
    tag = profile_tag(mean_rel)
    texts: dict[str, tuple[Severity, str, str]] = {
        "surgical": ("info", "Surgical fine-tuning",
                     f"Mean relative change is very small ({mean_rel:.4f}). Weights barely moved from the "
                     "base: typical of careful SFT with a low learning rate or few steps."),
        "standard": ("info", "Standard fine-tuning",
                     f"Mean relative change ({mean_rel:.4f}) is in the typical range for SFT: enough to "
                     "learn new behaviour while staying close to the base."),
        "heavy": ("notable", "Heavy fine-tuning",
                  f"Mean relative change ({mean_rel:.4f}) is above average: aggressive SFT, multi-stage "
                  "training (SFT+DPO/RLHF) or a large dataset."),
        "extreme": ("warning", "Extreme fine-tuning",
                    f"Mean relative change ({mean_rel:.4f}) is very high: continued pre-training, very "
                    "aggressive SFT, or a substantially different model."),
    }
    return _finding("magnitude", texts[tag], mean_rel, {"mean_relative_change": mean_rel, "profile_tag": tag})


def seed_findings(mods: list[ModuleDelta]) -> list[Finding]:
    """The seed's categories (magnitude first), over the seed's module set."""
    out: list[Finding] = []
    mean_rel = _mean([m.frob_norm_relative for m in mods])
    out.append(magnitude_finding(mean_rel))

    svd = [m for m in mods if m.has_svd and m.concentration_top_k is not None]
    if svd:
        conc = _mean([m.concentration_top_k or 0.0 for m in svd if m.concentration_top_k])
        er = _mean([m.effective_rank or 0.0 for m in svd if m.effective_rank])
        k = svd[0].top_k or 20
        ev = {"mean_concentration_top_k": conc, "mean_effective_rank": er, "top_k": k}
        rank = ("low" if conc > seed_thresholds.CONC_LOW_RANK
                else "moderate" if conc > seed_thresholds.CONC_FULL_RANK else "full")
        texts: dict[str, tuple[Severity, str, str]] = {
            "low": ("info", "Semi-structured changes (LoRA-like directions)",
                    f"Top-{k} singular values capture {conc:.1%} of the change energy: the "
                    "change is partly concentrated in a low-rank subspace."),
            "moderate": ("info", "Moderate-rank changes",
                         f"Top-{k} concentration is {conc:.1%}: spread across many directions "
                         f"but not uniformly (effective rank ≈ {er:.0f}). Typical of SFT on diverse data."),
            "full": ("notable", "Full-rank changes (broad weight rewriting)",
                     f"Top-{k} concentration is only {conc:.1%}: the change spreads over "
                     f"many directions (effective rank ≈ {er:.0f}); not LoRA-like."),
        }
        out.append(_finding("structure", texts[rank], conc, ev))

    attn = [m for m in mods if m.role in ATTN_ROLES and m.has_svd]
    mlp = [m for m in mods if m.role in MLP_ROLES and m.has_svd]
    if attn and mlp:
        am, mm = _mean([m.frob_norm_relative for m in attn]), _mean([m.frob_norm_relative for m in mlp])
        ratio = am / (mm + 1e-12)
        ev = {"attention_mean": am, "mlp_mean": mm, "ratio": ratio}
        text: tuple[Severity, str, str]
        if ratio > ATTN_HEAVY_RATIO:
            text = ("info", "Attention changed more than MLP",
                    f"Attention ({am:.4f}) changed more than MLP ({mm:.4f})"
                    + (", which is untouched" if mm == 0 else f", ratio {ratio:.2f}")
                    + ": the update went to the attention projections (typical of adapters on attention only).")
        elif ratio > seed_thresholds.ATTN_MLP_BALANCED:
            text = ("info", "Balanced attention/MLP changes",
                    f"Attention ({am:.4f}) and MLP ({mm:.4f}) changed roughly equally (ratio {ratio:.2f}).")
        else:
            text = ("notable", "MLP changed more than attention",
                    f"MLP ({mm:.4f}) changed more than attention ({am:.4f}), ratio "
                    f"{ratio:.2f}: the feed-forward (knowledge) pathway absorbed more of the update.")
        out.append(_finding("attention", text, ratio, ev))

    head = [m for m in mods if m.role in HEAD_ROLES]
    if head:
        top = max(head, key=lambda m: m.frob_norm_relative)
        body = _mean([m.frob_norm_relative for m in mods if m.role not in HEAD_ROLES])
        ratio = top.frob_norm_relative / (body + 1e-12)
        if ratio > seed_thresholds.HEAD_BODY_RATIO:
            out.append(Finding(code="head", category="head", severity="notable",
                               title="Output head / embedding is the most changed module",
                               detail=f"{top.name} changed {top.frob_norm_relative:.4f}, {ratio:.1f}× the body "
                               f"average ({body:.4f}): the vocabulary distribution was reshaped.",
                               metric_value=top.frob_norm_relative,
                               evidence={"module": top.name, "ratio": ratio, "body_mean": body}))

    norms = [m for m in mods if m.role == "norm"]
    if norms:
        ln = _mean([m.frob_norm_relative for m in norms])
        ev_ln = {"mean_relative_change": ln, "n": len(norms)}
        if ln < seed_thresholds.LN_UNTOUCHED:
            out.append(_finding("layernorm", ("info", "Norm weights nearly untouched",
                                              f"Norm mean change is {ln:.6f}: essentially frozen, as in standard "
                                              "SFT."), ln, ev_ln))
        elif ln > seed_thresholds.LN_MODIFIED:
            out.append(_finding("layernorm", ("notable", "Norm weights significantly modified",
                                              f"Norm mean change is {ln:.4f}: training shifted representations "
                                              "enough to recalibrate the normalisation layers."), ln, ev_ln))

    ln_by_layer = layer_norms(mods)
    if len(ln_by_layer) >= seed_thresholds.MIN_LAYERS_FOR_PROFILE:
        u = u_shape_ratio(ln_by_layer)
        peak = max(ln_by_layer, key=lambda k: ln_by_layer[k])
        ev = {"u_ratio": u, "n_layers": len(ln_by_layer), "peak_layer": peak}
        if u > seed_thresholds.U_SHAPE_HIGH:
            title, detail = ("U-shaped layer profile",
                             f"Early and late layers changed more than the middle (U-ratio {u:.2f}).")
        elif u < seed_thresholds.U_SHAPE_LOW:
            title, detail = ("Inverted-U layer profile",
                             f"Middle layers changed more than early and late ones (U-ratio {u:.2f}).")
        else:
            title, detail = ("Flat layer profile",
                             f"Change is spread evenly across layers (U-ratio {u:.2f}); peak at layer {peak}.")
        out.append(Finding(code="layer_profile", category="layer_profile", severity="info", title=title,
                           detail=detail, metric_value=u, evidence=ev))

    ranked = sorted(mods, key=lambda m: m.frob_norm_relative, reverse=True)[:3]
    if len(ranked) == 3:
        out.append(Finding(code="outliers", category="outliers", severity="info", title="Most changed modules",
                           detail="Top-3 by relative change: "
                           + ", ".join(f"{m.name} ({m.frob_norm_relative:.4f})" for m in ranked) + ".",
                           evidence={"modules": [m.name for m in ranked],
                                     "values": [m.frob_norm_relative for m in ranked]}))
    return out
