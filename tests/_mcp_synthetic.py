"""A 7B-shaped pair with small dimensions: Llama-7B's names and counts (32 layers, 291 tensors, sharded files),
tiny matrices. The report of such a pair has the same rows, findings and names as a real 7B report, so the
size of the tool answers cut from it is the size of a 7B pair's answers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

LAYERS = 32  # Llama-2-7B
SHARDS = 2  # Llama-2-7b-hf ships model-00001-of-00002.safetensors, model-00002-of-00002.safetensors
DIM, HIDDEN, VOCAB = 32, 86, 64


def llama7b_names() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, DIM)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (DIM, DIM)
        shapes[p + "mlp.gate_proj.weight"] = (HIDDEN, DIM)
        shapes[p + "mlp.up_proj.weight"] = (HIDDEN, DIM)
        shapes[p + "mlp.down_proj.weight"] = (DIM, HIDDEN)
        shapes[p + "input_layernorm.weight"] = (DIM,)
        shapes[p + "post_attention_layernorm.weight"] = (DIM,)
    shapes["model.norm.weight"] = (DIM,)
    shapes["lm_head.weight"] = (VOCAB, DIM)
    return shapes


def _save_sharded(state: dict[str, torch.Tensor], out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    per = -(-len(names) // SHARDS)
    weight_map = {}
    for s in range(SHARDS):
        fname = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        part = names[s * per:(s + 1) * per]
        save_file({n: state[n].contiguous() for n in part}, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
              "num_hidden_layers": LAYERS, "intermediate_size": HIDDEN, "vocab_size": VOCAB}
    (out / "config.json").write_text(json.dumps(config))


def build_7b_shaped_pair(root: Path) -> tuple[Path, Path]:
    """A and a fine-tuned-like B: every layer moved, except two frozen layers (more findings, not fewer)."""
    gen = torch.Generator().manual_seed(7)
    a = {n: torch.randn(shape, generator=gen) * 0.05 for n, shape in llama7b_names().items()}
    b = {}
    for n, t in a.items():
        frozen = n.startswith(("model.layers.0.", "model.layers.1."))
        b[n] = t.clone() if frozen else t + 0.004 * torch.randn(t.shape, generator=gen)
    pa, pb = root / "Llama-2-7b-hf", root / "Llama-2-7b-chat-hf"
    _save_sharded(a, pa)
    _save_sharded(b, pb)
    return pa, pb
