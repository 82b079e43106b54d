"""The weight-space O/Q ratio ("The Weight-Space O/Q Ratio", N. Yudin, 2026)."""

from __future__ import annotations

from modeldelta_mcp.diagnosis.fingerprints.context import Context
from modeldelta_mcp.models import Finding, ModuleDelta

# The paper's table: R1-distilled pairs 1.99–7.89, standard post-training near 1.0 (0.73–1.49 for
# base→instruct; Tulu-3 SFT→DPO 1.85), with community fine-tunes just above 2 (OpenHermes-2.5 2.12,
# dolphin-2.2.1 2.02). Above this the pair looks R1-distilled — a strong heuristic with known misses.
OQ_NOTABLE = 2.0


def _layer_mean(mods: list[ModuleDelta]) -> float | None:
    """Mean over layers of the weight's relative change (averaged inside a layer first)."""
    per: dict[int, list[float]] = {}
    for m in mods:
        if m.layer is not None:
            per.setdefault(m.layer, []).append(m.frob_norm_relative)
    if not per:
        return None
    return sum(sum(v) / len(v) for v in per.values()) / len(per)


def detect_oq_ratio(ctx: Context) -> Finding | None:
    weights = [m for m in ctx.mods if m.name.endswith("weight")]  # never biases
    o = [m for m in weights if m.role == "attn_o"]
    q = [m for m in weights if m.role == "attn_q"]
    variant = "O/Q"
    if not q:
        q, variant = [m for m in weights if m.role == "attn_qkv"], "O/QKV"
    mo, mq = _layer_mean(o), _layer_mean(q)
    if mo is None or mq is None:
        return None
    ev = {"oq": None, "variant": variant, "o_mean_relative": mo, "q_mean_relative": mq,
          "n_layers": len({m.layer for m in o}), "threshold": OQ_NOTABLE}
    if mq <= 0:
        return Finding(code="oq_ratio", category="method", severity="info", title="O/Q ratio undefined",
                       detail=f"The {variant[2:]} projection weights did not change, so the weight-space O/Q ratio "
                       "is undefined.", metric_value=None, evidence=ev)
    oq = mo / mq
    ev["oq"] = oq
    common = (f"Weight-space {variant} ratio {oq:.2f} (mean ΔW/W of attention output {mo:.4g} over "
              f"{variant[2:]} {mq:.4g}).")
    if oq > OQ_NOTABLE:
        return Finding(code="oq_ratio", category="method", severity="notable", title=f"High {variant} ratio",
                       detail=common + " Above 2: in the O/Q paper's table the R1-distilled pairs sit at 1.99–7.89 "
                       "and standard post-training near 1.0 — a strong hint of reasoning distillation, but a "
                       "heuristic with known misses (community fine-tunes OpenHermes-2.5 at 2.12, dolphin-2.2.1 "
                       "at 2.02).", metric_value=oq, evidence=ev)
    return Finding(code="oq_ratio", category="method", severity="info", title=f"{variant} ratio",
                   detail=common + " At or below 2, as for standard post-training in the O/Q paper's table "
                   "(near 1.0; R1-distilled pairs 1.99–7.89). A heuristic, not proof.", metric_value=oq, evidence=ev)
