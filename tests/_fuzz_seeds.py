"""Seed checkpoints for the fuzz campaign: small but real files of every format the readers accept.

Every seed is written by the library that writes that format for real (safetensors, torch.save, json),
so the mutations start from what a user's disk holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTER, VOCAB, LAYERS = 8, 16, 32, 2
LORA_R = 2
LORA_TARGETS = ("q_proj", "v_proj")


def base_state() -> dict[str, torch.Tensor]:
    """A two-layer Qwen2-style state dict (Hugging Face names), mixed float dtypes and one int buffer."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[f"{p}.self_attn.{proj}.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g)
        state[f"{p}.self_attn.q_proj.bias"] = torch.randn(HIDDEN, generator=g)
        state[f"{p}.mlp.gate_proj.weight"] = torch.randn(INTER, HIDDEN, generator=g).to(torch.bfloat16)
        state[f"{p}.mlp.up_proj.weight"] = torch.randn(INTER, HIDDEN, generator=g).to(torch.float16)
        state[f"{p}.mlp.down_proj.weight"] = torch.randn(HIDDEN, INTER, generator=g)
        state[f"{p}.input_layernorm.weight"] = torch.ones(HIDDEN)
    state["model.norm.weight"] = torch.ones(HIDDEN)
    state["model.rotary_emb.position_ids"] = torch.arange(VOCAB, dtype=torch.int64)
    state["lm_head.weight"] = torch.randn(VOCAB, HIDDEN, generator=g)
    return state


CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": HIDDEN,
    "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": 2, "num_key_value_heads": 1,
    "vocab_size": VOCAB, "torch_dtype": "float32", "tie_word_embeddings": False,
}


def _index(out: Path, name: str, shards: dict[str, dict[str, torch.Tensor]]) -> None:
    weight_map = {k: fname for fname, part in shards.items() for k in part}
    total = sum(v.numel() * v.element_size() for part in shards.values() for v in part.values())
    (out / name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def _halves(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    names = list(state)
    half = len(names) // 2
    return {k: state[k] for k in names[:half]}, {k: state[k] for k in names[half:]}


def adapter_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for i in range(LAYERS):
        for proj in LORA_TARGETS:
            key = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            out[f"{key}.lora_A.weight"] = torch.randn(LORA_R, HIDDEN, generator=g)
            out[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, LORA_R, generator=g) * 0.1
    return out


ADAPTER_CONFIG = {"peft_type": "LORA", "r": LORA_R, "lora_alpha": 4, "target_modules": list(LORA_TARGETS),
                  "base_model_name_or_path": "seed/st_single", "fan_in_fan_out": False, "use_rslora": False,
                  "rank_pattern": {}, "alpha_pattern": {}}


def _gguf_seed(src: Path, out: Path) -> None:
    """A Q8_0 GGUF (written by the gguf package, through benchmarks/make_gguf.py) of a Qwen2 model whose rows
    are a multiple of Q8_0's 32-value blocks, and its safetensors source (model_a of the comparison)."""
    from _quant_gguf import write_gguf

    g = torch.Generator().manual_seed(2)
    h, inter, vocab = 32, 64, 64
    state = {"model.embed_tokens.weight": torch.randn(vocab, h, generator=g), "model.norm.weight": torch.ones(h),
             "lm_head.weight": torch.randn(vocab, h, generator=g)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[f"{p}.self_attn.{proj}.weight"] = torch.randn(h, h, generator=g)
        state[f"{p}.mlp.gate_proj.weight"] = torch.randn(inter, h, generator=g)
        state[f"{p}.mlp.up_proj.weight"] = torch.randn(inter, h, generator=g)
        state[f"{p}.mlp.down_proj.weight"] = torch.randn(h, inter, generator=g)
        state[f"{p}.input_layernorm.weight"] = torch.ones(h)
        state[f"{p}.post_attention_layernorm.weight"] = torch.ones(h)
    save_file(state, str(src / "model.safetensors"))
    cfg = {**CONFIG, "hidden_size": h, "intermediate_size": inter, "vocab_size": vocab, "num_attention_heads": 4,
           "num_key_value_heads": 4}
    (src / "config.json").write_text(json.dumps(cfg, indent=1))
    write_gguf(src, out / "model.gguf", "qwen2", cfg, "Q8_0")


def build_seeds(root: Path) -> dict[str, Path]:
    """Write every seed directory under `root`; returns name -> directory."""
    state = base_state()
    dirs = {name: root / name for name in ("st_single", "st_sharded", "bin_zip", "bin_legacy", "bin_sharded",
                                           "adapter_st", "adapter_bin", "gguf_src", "gguf")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    config = json.dumps(CONFIG, indent=1)
    save_file(state, str(dirs["st_single"] / "model.safetensors"), metadata={"format": "pt"})
    (dirs["st_single"] / "config.json").write_text(config)

    first, second = _halves(state)
    shards = {"model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": second}
    for fname, part in shards.items():
        save_file(part, str(dirs["st_sharded"] / fname), metadata={"format": "pt"})
    _index(dirs["st_sharded"], "model.safetensors.index.json", shards)
    (dirs["st_sharded"] / "config.json").write_text(config)

    torch.save(state, dirs["bin_zip"] / "pytorch_model.bin")
    (dirs["bin_zip"] / "config.json").write_text(config)
    torch.save(state, dirs["bin_legacy"] / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    bin_shards = {"pytorch_model-00001-of-00002.bin": first, "pytorch_model-00002-of-00002.bin": second}
    for fname, part in bin_shards.items():
        torch.save(part, dirs["bin_sharded"] / fname)
    _index(dirs["bin_sharded"], "pytorch_model.bin.index.json", bin_shards)

    adapter = adapter_state()
    save_file(adapter, str(dirs["adapter_st"] / "adapter_model.safetensors"), metadata={"format": "pt"})
    torch.save(adapter, dirs["adapter_bin"] / "adapter_model.bin")
    for name in ("adapter_st", "adapter_bin"):
        (dirs[name] / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG, indent=1))
    _gguf_seed(dirs["gguf_src"], dirs["gguf"])
    return dirs
