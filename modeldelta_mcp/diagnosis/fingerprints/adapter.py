"""B is a PEFT LoRA adapter: ΔW = scaling·B·A, its rank read from the r×r core (no full matrix)."""

from __future__ import annotations

from collections import Counter

from modeldelta_mcp.diagnosis.fingerprints.context import Context, finding, numerical_rank
from modeldelta_mcp.models import Finding


def detect_lora_adapter(ctx: Context) -> Finding | None:
    facts = ctx.adapter
    if facts is None:
        return None
    modules = facts.modules
    by_name = {m.name: m for m in ctx.mods}
    roles = sorted({by_name[x.name].role for x in modules if x.name in by_name})
    ranks = Counter(x.rank for x in modules)
    rank = ranks.most_common(1)[0][0] if ranks else facts.r
    core = max((x.numerical_rank for x in modules), default=0)
    measured = [numerical_rank(by_name[x.name]) for x in modules if x.name in by_name]
    measured_max = max((r for r in measured if r is not None), default=None)
    alpha = facts.lora_alpha
    scaling = sorted({round(x.scaling, 12) for x in modules})
    return finding(
        "lora_adapter", "info", f"PEFT LoRA adapter (rank {rank}, alpha {alpha:g})",
        f"B is a LoRA adapter on {len(modules)} modules ({', '.join(roles)}): "
        f"ΔW = {scaling[0] if scaling else '?'}·B·A "
        f"with r = {rank}. The exact spectrum of each ΔW comes from its r×r core (QR of B and Aᵀ): numerical rank "
        f"{core}" + (f"; the streamed deltas measure {measured_max}." if measured_max is not None else "."),
        {"rank": rank, "alpha": alpha, "roles": roles, "scaling": scaling[0] if len(scaling) == 1 else scaling,
         "use_rslora": facts.use_rslora, "n_modules": len(modules), "core_rank": core,
         "measured_rank": measured_max, "ranks": {str(k): v for k, v in sorted(ranks.items())},
         "replaced_tensors": list(facts.replaced), "target_modules": facts.target_modules,
         "base_model_name_or_path": facts.base_model_name_or_path},
        metric_value=rank,
    )
