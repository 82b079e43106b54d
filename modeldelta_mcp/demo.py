"""`modeldelta demo`: a small deterministic example pair made on the fly, no network.

A tiny Llama-named transformer is trained for a few steps on real text (the Zen of Python and
standard-library docstrings, byte-level), then derived twice with real gradient steps: a full
fine-tune on other text, and a rank-4 LoRA on q/v trained and merged into the weights.
"""

from __future__ import annotations

import codecs
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

SEED = 1234


def demo_text() -> tuple[bytes, bytes]:
    """Two real English corpora that ship with every Python."""
    import argparse
    import collections
    import contextlib
    import io
    import json
    import pathlib
    import threading

    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen
        import this

    zen = codecs.decode(this.s, "rot13")
    docs = "\n".join((m.__doc__ or "") for m in (argparse, collections, json, pathlib, threading))
    return zen.encode() * 4, docs.encode()


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class LoRALinear(nn.Module):
    """y = W x + (alpha/r) B A x; merge() folds BA into W."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / r
        self.lora_A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += self.scale * self.lora_B @ self.lora_A
        return self.base


class Attention(nn.Module):
    """Holds the projections under Llama's names; Block computes with them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(dim), RMSNorm(dim)
        self.self_attn = Attention(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.input_layernorm(x)
        a = self.self_attn
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2) for p in (a.q_proj, a.k_proj, a.v_proj))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + a.o_proj(y.transpose(1, 2).reshape(b, t, d))
        h = self.post_attention_layernorm(x)
        m = self.mlp
        return x + m.down_proj(nn.functional.silu(m.gate_proj(h)) * m.up_proj(h))


class Body(nn.Module):
    def __init__(self, dim: int, layers: int, hidden: int, heads: int, vocab: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, hidden, heads) for _ in range(layers))
        self.norm = RMSNorm(dim)


class TinyLlama(nn.Module):
    """A byte-level causal LM whose state_dict uses Llama tensor names."""

    def __init__(self, dim: int = 64, layers: int = 4, hidden: int = 172, heads: int = 4, vocab: int = 256) -> None:
        super().__init__()
        self.model = Body(dim, layers, hidden, heads, vocab)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(ids)
        for block in self.model.layers:
            x = block(x)
        return self.lm_head(self.model.norm(x))


def batches(data: bytes, steps: int, batch: int = 8, seq: int = 64, seed: int = SEED):
    ids = torch.tensor(list(data), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[s: s + seq + 1] for s in starts])
        yield x[:, :-1], x[:, 1:]


def train(model: nn.Module, data: bytes, steps: int, lr: float, params=None, seed: int = SEED) -> float:
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr, weight_decay=0.0)
    loss = torch.tensor(0.0)
    for x, y in batches(data, steps, seed=seed):
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def save(model: nn.Module, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}\n')
    return out


def build_demo_pair(root: Path, base_steps: int = 60, tune_steps: int = 40) -> dict[str, Path]:
    """Write base/, full_finetune/ and lora_merged/ under root; deterministic for a given torch."""
    import copy

    torch.manual_seed(SEED)
    text_a, text_b = demo_text()
    base = TinyLlama()
    train(base, text_a, base_steps, lr=3e-3)
    paths = {"base": save(base, root / "base")}

    full = copy.deepcopy(base)
    train(full, text_b, tune_steps, lr=1e-4, seed=SEED + 1)
    paths["full_finetune"] = save(full, root / "full_finetune")

    lora = copy.deepcopy(base)
    for p in lora.parameters():
        p.requires_grad_(False)
    adapters = []
    for block in lora.model.layers:
        for n in ("q_proj", "v_proj"):
            wrapped = LoRALinear(getattr(block.self_attn, n), r=4, alpha=8)
            setattr(block.self_attn, n, wrapped)
            adapters += [wrapped.lora_A, wrapped.lora_B]
    train(lora, text_b, tune_steps, lr=1e-3, params=adapters, seed=SEED + 1)
    for block in lora.model.layers:
        for n in ("q_proj", "v_proj"):
            setattr(block.self_attn, n, getattr(block.self_attn, n).merged())
    paths["lora_merged"] = save(lora, root / "lora_merged")
    return paths
