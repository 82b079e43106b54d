"""Real training procedures for the forensic corpus, on real text (the demo's offline corpora).

BERT (all-MiniLM-L6-v2): a few steps of the contrastive sentence-embedding objective it was trained
with (in-batch negatives over neighbouring sentences, mean pooling). Qwen2-architecture tiny model:
next-byte language modelling. LoRA and DoRA through PEFT (merge_and_unload, save_pretrained).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from modeldelta_mcp.demo import demo_text

SEED = 20240611


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread (no fork/join per small GEMM), and share the CPU better."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sentences() -> list[str]:
    zen, docs = demo_text()
    text = (zen[: len(zen) // 4] + b"\n" + docs).decode()
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n\s*\n", text)]
    return [" ".join(p.split()) for p in parts if len(p) > 25]


def _train(model: nn.Module, batch_loss: Callable[[torch.Generator], torch.Tensor], steps: int, lr: float,
           wd: float, seed: int, params: Iterable[nn.Parameter] | None) -> float:
    """AdamW on `params` (default: all trainable) for `steps` batches drawn with a generator seeded by `seed`;
    the model is left in eval mode. Returns the last batch's loss."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=wd)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = batch_loss(g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


# ---- BERT: contrastive sentence embeddings -------------------------------------------------------------


def load_bert(path: Path) -> nn.Module:
    from transformers import BertModel

    torch.manual_seed(SEED)
    return BertModel.from_pretrained(str(path))


def bert_steps(model: nn.Module, tokenizer, steps: int, lr: float, wd: float = 0.01, seed: int = SEED,
               params: Iterable[nn.Parameter] | None = None, batch: int = 8) -> float:
    """MultipleNegativesRanking loss: sentence i must embed closest to sentence i+1 in the batch."""
    sents = sentences()

    def batch_loss(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(sents) - 1, (batch,), generator=g).tolist()
        anchors = tokenizer([sents[i] for i in idx], padding=True, truncation=True, max_length=24,
                            return_tensors="pt")
        positives = tokenizer([sents[i + 1] for i in idx], padding=True, truncation=True, max_length=24,
                              return_tensors="pt")
        ea, ep = _embed(model, anchors), _embed(model, positives)
        return nn.functional.cross_entropy(20.0 * ea @ ep.T, torch.arange(batch))

    return _train(model, batch_loss, steps, lr, wd, seed, params)


def _embed(model: nn.Module, enc) -> torch.Tensor:
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return nn.functional.normalize(pooled, dim=-1)


# ---- Qwen2 architecture: a tiny byte-level causal LM ----------------------------------------------------


QWEN_CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   tie_word_embeddings=False, rms_norm_eps=1e-6)


def new_qwen(seed: int = SEED) -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**QWEN_CONFIG))


def lm_steps(model: nn.Module, data: bytes, steps: int, lr: float, wd: float = 0.0, seed: int = SEED,
             params: Iterable[nn.Parameter] | None = None, batch: int = 8, seq: int = 64) -> float:
    ids = torch.tensor(list(data), dtype=torch.long)

    def batch_loss(g: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[s: s + seq + 1] for s in starts])
        logits = model(input_ids=x[:, :-1]).logits
        return nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())

    return _train(model, batch_loss, steps, lr, wd, seed, params)


# ---- procedures over either model -----------------------------------------------------------------------


def freeze_all_but(model: nn.Module, keep: Callable[[str], bool]) -> list[nn.Parameter]:
    out = []
    for name, p in model.named_parameters():
        p.requires_grad_(keep(name))
        if p.requires_grad:
            out.append(p)
    return out


def with_lora(model: nn.Module, targets: list[str], r: int, alpha: int, seed: int = SEED, dora: bool = False,
              dropout: float = 0.0, modules_to_save: list[str] | None = None) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout,
                                            use_dora=dora, modules_to_save=modules_to_save))


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
