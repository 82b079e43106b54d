"""Repos for the hub streaming tests: a small bf16 Llama-named base, a fine-tune of it (sharded), unrelated
weights that claim it as base, a LoRA adapter of it, and gated/private/moving copies, on the stand-in hub."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from _core_ckpt import save_checkpoint
from _core_fakehub import FakeHub, files_from_dir
from safetensors.torch import save as save_bytes

HIDDEN, INTER, VOCAB, LAYERS = 128, 384, 2048, 4
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
          "num_hidden_layers": LAYERS}
TOKEN = "hf_fake_s3cret"
QO_GLOBS = ["*.self_attn.q_proj.*", "*.self_attn.o_proj.*"]


def llama(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def w(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
         "lm_head.weight": w(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[f"{p}self_attn.{proj}.weight"] = w(HIDDEN, HIDDEN)
        t[f"{p}mlp.gate_proj.weight"] = w(INTER, HIDDEN)
        t[f"{p}mlp.up_proj.weight"] = w(INTER, HIDDEN)
        t[f"{p}mlp.down_proj.weight"] = w(HIDDEN, INTER)
        t[f"{p}input_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        t[f"{p}post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
    return t


def finetuned(base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {k: (v.float() + 0.002 * torch.randn(v.shape, generator=g)).to(torch.bfloat16) if v.dim() == 2 else v
            for k, v in base.items()}


def adapter_files() -> dict[str, bytes]:
    g = torch.Generator().manual_seed(3)
    state = {}
    for i in range(LAYERS):
        key = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        state[f"{key}.lora_A.weight"] = torch.randn(4, HIDDEN, generator=g) * 0.05
        state[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, 4, generator=g) * 0.05
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
           "base_model_name_or_path": "org/base"}
    return {"adapter_config.json": json.dumps(cfg).encode(), "adapter_model.safetensors": save_bytes(state)}


@dataclass
class Pair:
    base: Path
    tuned: Path


def write_local(root: Path) -> Pair:
    base = llama(0)
    return Pair(save_checkpoint(root / "base", base, config=CONFIG),
                save_checkpoint(root / "tuned", finetuned(base), shards=2, config=CONFIG))


def add_repos(fake: FakeHub, local: Pair) -> None:
    """The repos every hub test uses (their files are read from `local`)."""
    base, tuned = files_from_dir(local.base), files_from_dir(local.tuned)
    liar = files_from_dir(save_checkpoint(local.base.parent / "liar", llama(99), config=CONFIG))
    fake.add_repo("org/base", {"main": base})
    fake.add_repo("org/tuned", {"main": tuned}, card_data={"base_model": "org/base", "license": "mit"})
    fake.add_repo("org/liar", {"main": liar}, card_data={"base_model": "org/base",
                                                          "base_model_relation": "finetune"})
    fake.add_repo("org/twobase", {"main": tuned}, card_data={"base_model": ["org/base", "org/other"]})
    fake.add_repo("org/nocard", {"main": tuned})
    fake.add_repo("org/adapter", {"main": adapter_files()})
    fake.add_repo("org/gated", {"main": tuned}, gated=True)
    fake.add_repo("org/private", {"main": tuned}, token=TOKEN)
    fake.add_repo("org/moving", {"main": tuned})


