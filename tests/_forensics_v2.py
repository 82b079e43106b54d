"""Derivations as they are made and saved on the hub (issue 9): quantizers' round trips stored in each float
format, composed recipes, LoRA and DoRA merges saved in half precision, pruning patterns, reversed pairs.

Built from the calibration corpus of tests/_forensics_corpus.py (its base models and trained variants),
once per test session. Quantization uses the libraries people use (tests/_forensics_tools.py).
Expectations are the procedures' parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _forensics_derive as D
import _forensics_tools as TL
import torch
from _forensics_corpus import Approx, Case
from safetensors.torch import load_file

FORMATS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# schemes end to end: (scheme, base) — the tiny Qwen2 for most, MiniLM where the scheme's group needs
# input dimensions of 128 or more
QUANT_CASES = [
    ("torchao_int8", "qwen"), ("ct_int8_tensor", "qwen"), ("torchao_int4_g32_asym", "qwen"),
    ("torchao_int3_g32_sym", "qwen"), ("torchao_int2_row_asym", "qwen"), ("bnb_nf4", "qwen"), ("bnb_fp4", "qwen"),
    ("ct_fp8_tensor", "qwen"), ("quanto_fp8_e5m2", "qwen"), ("ct_int4_g128_sym", "bert"),
]
PRUNE_FRACTION = 0.5


@dataclass
class V2Case(Case):
    recipe: list[str] | None = None
    direction: str | None = None
    step_evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # finding code -> evidence


def _state(path: Path) -> D.State:
    return load_file(str(path / "model.safetensors"))


def _linear(state: D.State, prefix: str) -> list[str]:
    return [k for k, v in state.items() if k.startswith(prefix) and k.endswith("weight") and v.dim() == 2]


def _quantized(state: D.State, names: list[str], scheme: TL.Scheme, dtype: torch.dtype) -> D.State:
    return TL.apply(state, names, scheme, dtype)


def nm_prune(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the m-n largest |w| of every group of m inputs (N:M semi-structured sparsity, 2:4 on GPUs)."""
    g = w.reshape(w.shape[0], -1, m)
    drop = g.abs().argsort(dim=2)[..., :n]
    return g.scatter(2, drop, 0.0).reshape(w.shape)


def prune_units(state: D.State, layer_prefix: str, mlp: tuple[str, str, str], keep: float) -> D.State:
    """Structured MLP pruning: zero the hidden units of smallest up-row norm (rows of up/gate, columns of down)."""
    out = D.clone(state)
    up_name, gate_name, down_name = mlp
    layers = sorted({int(k[len(layer_prefix):].split(".")[0]) for k in state if k.startswith(layer_prefix)})
    for i in layers:
        up = state[f"{layer_prefix}{i}.{up_name}"]
        drop = up.norm(dim=1).argsort()[: round((1 - keep) * up.shape[0])]
        for name in (up_name, gate_name):
            key = f"{layer_prefix}{i}.{name}"
            if key in out:
                out[key] = out[key].clone()
                out[key][drop] = 0.0
        key = f"{layer_prefix}{i}.{down_name}"
        out[key] = out[key].clone()
        out[key][:, drop] = 0.0
    return out


def prune_heads(state: D.State, layer_prefix: str, head_dim: int, heads: int, drop_heads: list[int]) -> D.State:
    """Zero whole attention heads: their rows of q (and k/v when not shared) and their columns of o."""
    out = D.clone(state)
    for k in state:
        if not k.startswith(layer_prefix) or not k.endswith("weight"):
            continue
        rows = [r for h in drop_heads for r in range(h * head_dim, (h + 1) * head_dim)]
        if "q_proj" in k:
            out[k] = out[k].clone()
            out[k][rows] = 0.0
        elif "o_proj" in k:
            out[k] = out[k].clone()
            out[k][:, rows] = 0.0
    return out


def build_v2(root: Path, qwen: dict[str, Case], bert: dict[str, Case]) -> dict[str, V2Case]:
    from _forensics_corpus import BERT_LORA_MERGE, QWEN_LORA_MERGE, _qwen_config

    cases: dict[str, V2Case] = {}
    qbase_dir = qwen["full_finetune"].a
    qbase = _state(qbase_dir)
    qconfig = _qwen_config()
    bbase_dir = bert["full_finetune"].a
    bbase = _state(bbase_dir)
    bconfig = bbase_dir / "config.json"
    qlin = _linear(qbase, "model.layers.")
    blin = _linear(bbase, "encoder.layer.")

    def add(name: str, a: Path, state: D.State, config: Any, method: str, **kw: Any) -> V2Case:
        c = V2Case(name, a, D.save_state(state, root / name, config), method, **kw)
        cases[name] = c
        return c

    # 1. each quantization scheme, each storing format
    schemes = {s.name: s for s in TL.SCHEMES}
    for name, base in QUANT_CASES:
        scheme = schemes[name]
        if not TL.available(scheme.library):
            continue
        qwen_base = base == "qwen"
        state, lin = (qbase, qlin) if qwen_base else (bbase, blin)
        a, config = (qbase_dir, qconfig) if qwen_base else (bbase_dir, bconfig)
        for fmt, dtype in FORMATS.items():
            ev = {"number_format": scheme.number_format, "granularity": scheme.granularity,
                  "group_size": scheme.group_size, "bits": scheme.bits}
            add(f"quant_{name}_{fmt}", a, _quantized(state, lin, scheme, dtype), config, "quantization_roundtrip",
                evidence=ev, recipe=["quantization_roundtrip"], direction="b_from_a")

    # 2. composed recipes
    tuned = _state(qwen["full_finetune"].b)
    if TL.available("torchao"):
        # stored in float32: in bf16 this fine-tune's changes to the unquantized tensors (norms, embeddings)
        # are below one bf16 step and read as the cast (docs/diagnosis.md)
        add("recipe_finetune_then_int4", qbase_dir, _quantized(tuned, qlin, schemes["torchao_int4_g32_asym"],
                                                                torch.float32), qconfig, "full_finetune",
            recipe=["full_finetune", "quantization_roundtrip"], direction="b_from_a")
    add("recipe_finetune_then_bf16", qbase_dir, D.cast(tuned, torch.bfloat16), qconfig, "full_finetune",
        recipe=["full_finetune", "precision_change"], direction="b_from_a",
        step_evidence={"precision_change": {"format": "bfloat16"}})
    bitfit = _state(bert["bitfit"].b)
    add("recipe_bitfit_then_fp16", bbase_dir, D.cast(bitfit, torch.float16), bconfig, "bias_only",
        recipe=["bias_only", "precision_change"], direction="b_from_a",
        step_evidence={"precision_change": {"format": "float16"}})
    # LoRA merges saved in each half-precision format: rank and targets exact
    for base, spec, merged_dir, a, config in (("qwen", QWEN_LORA_MERGE, qwen["lora_merge"].b, qbase_dir, qconfig),
                                              ("bert", BERT_LORA_MERGE, bert["lora_merge"].b, bbase_dir, bconfig)):
        merged = _state(merged_dir)
        for fmt in ("bf16", "fp16"):
            add(f"lora_merge_{base}_{fmt}", a, D.cast(merged, FORMATS[fmt]), config, "lora_merge",
                evidence={"rank": spec["r"], "roles": ["attn_q", "attn_v"], "variant": "lora"},
                recipe=["lora_merge", "precision_change"], direction="b_from_a")
    # DoRA merges saved in bf16 (most merges on the hub are): rank, targets and variant as in float32
    for base, merged_dir, a, config in (("qwen", qwen["dora_merge"].b, qbase_dir, qconfig),
                                        ("bert", bert["dora_merge"].b, bbase_dir, bconfig)):
        fp32 = (qwen if base == "qwen" else bert)["dora_merge"]
        add(f"dora_merge_{base}_bf16", a, D.cast(_state(merged_dir), torch.bfloat16), config, "lora_merge",
            evidence=dict(fp32.evidence), recipe=["lora_merge", "precision_change"], direction="b_from_a")
    merged = _state(qwen["lora_merge"].b)
    add("recipe_lora_then_prune", qbase_dir,
        D.apply(merged, qlin, lambda w: D.magnitude_prune(w, PRUNE_FRACTION)), qconfig, "lora_merge",
        evidence={"roles": ["attn_q", "attn_v"]}, recipe=["lora_merge", "pruning"], direction="b_from_a")

    # 3. pruning patterns
    add("prune_2_4", qbase_dir, D.apply(qbase, qlin, lambda w: nm_prune(w, 2, 4)), qconfig, "pruning",
        evidence={"pattern": "2:4", "fraction": Approx(0.5, 0.05)}, recipe=["pruning"], direction="b_from_a")
    add("prune_4_8", bbase_dir, D.apply(bbase, blin, lambda w: nm_prune(w, 4, 8)), bconfig, "pruning",
        evidence={"pattern": "4:8", "fraction": Approx(0.5, 0.05)}, recipe=["pruning"], direction="b_from_a")
    add("prune_mlp_units", qbase_dir,
        prune_units(qbase, "model.layers.", ("mlp.up_proj.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight"),
                    keep=0.75), qconfig, "pruning", evidence={"pattern": "rows"}, recipe=["pruning"],
        direction="b_from_a")
    add("prune_heads", qbase_dir, prune_heads(qbase, "model.layers.", 16, 4, [1, 3]), qconfig, "pruning",
        evidence={"pattern": "heads"}, recipe=["pruning"], direction="b_from_a")

    # 4. reversed pairs of each lossy kind: A is the derived one
    for name, fwd in (("cast", qwen["fp16"]), ("quant", qwen["int8_per_row"]), ("prune", qwen["magnitude_prune"])):
        add_rev = V2Case(f"reversed_{name}", fwd.b, fwd.a, fwd.method, evidence=dict(fwd.evidence),
                         recipe=[fwd.method], direction="a_from_b")
        cases[add_rev.name] = add_rev
    if "quant_bnb_nf4_bf16" in cases:
        fwd2 = cases["quant_bnb_nf4_bf16"]
        cases["reversed_nf4_bf16"] = V2Case("reversed_nf4_bf16", fwd2.b, fwd2.a, fwd2.method,
                                            evidence=dict(fwd2.evidence), recipe=[fwd2.method], direction="a_from_b")
    return cases
