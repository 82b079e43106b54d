"""Small real checkpoint pairs for the report renderings: a LoRA merge with a frozen layer, and a 300-tensor pair."""

from __future__ import annotations

from pathlib import Path

import torch
from _core_ckpt import TINY_CONFIG, save_checkpoint

State = dict[str, torch.Tensor]
LAYER_TENSORS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj")


def llama_state(layers: int, dim: int, hidden: int, vocab: int, seed: int) -> State:
    g = torch.Generator().manual_seed(seed)
    state = {"model.embed_tokens.weight": torch.randn(vocab, dim, generator=g) * 0.02}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in LAYER_TENSORS:
            shape = (hidden, dim) if name in ("mlp.gate_proj", "mlp.up_proj") else \
                (dim, hidden) if name == "mlp.down_proj" else (dim, dim)
            state[p + name + ".weight"] = torch.randn(*shape, generator=g) / dim**0.5
        state[p + "input_layernorm.weight"] = torch.ones(dim)
        state[p + "post_attention_layernorm.weight"] = torch.ones(dim)
    state["model.norm.weight"] = torch.ones(dim)
    state["lm_head.weight"] = torch.randn(vocab, dim, generator=g) * 0.02
    return state


def lora_frozen_pair(root: Path, layers: int = 6, rank: int = 2) -> tuple[Path, Path]:
    """B = A + a rank-`rank` update on q and v of every layer but the last, which stays bit-identical."""
    a = llama_state(layers, dim=32, hidden=64, vocab=96, seed=0)
    b = {k: v.clone() for k, v in a.items()}
    g = torch.Generator().manual_seed(1)
    for i in range(layers - 1):
        for name in ("self_attn.q_proj", "self_attn.v_proj"):
            w = b[f"model.layers.{i}.{name}.weight"]
            up, down = torch.randn(w.shape[0], rank, generator=g), torch.randn(rank, w.shape[1], generator=g)
            w += 0.02 * up @ down
    return (save_checkpoint(root / "base", a, config=TINY_CONFIG),
            save_checkpoint(root / "lora_frozen", b, config=TINY_CONFIG))


def pair_300(root: Path) -> tuple[Path, Path]:
    """33 layers × 9 tensors + embedding, final norm and head: 300 tensors, every matrix fine-tuned densely."""
    a = llama_state(33, dim=16, hidden=32, vocab=64, seed=2)
    g = torch.Generator().manual_seed(3)
    b = {k: v + 0.01 * v.abs().mean() * torch.randn(v.shape, generator=g) * (1 + k.count("mlp")) for k, v in a.items()}
    assert len(a) == 300
    return (save_checkpoint(root / "a300", a, config=TINY_CONFIG),
            save_checkpoint(root / "b300", b, config=TINY_CONFIG))
