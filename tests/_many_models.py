"""A family of real checkpoints around all-MiniLM-L6-v2 for the many-candidate tests, built once per session.

Derived from the base (the parent): a fine-tune (real AdamW steps on the contrastive objective), a sibling
fine-tune (other batches and learning rate, same base), a PEFT LoRA merge, an fp16 cast, a magnitude
pruning of every layer matrix. Not derived from it: the same architecture from another initialisation,
trained a few steps. And a corrupt copy (truncated weights file).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import _forensics_derive as D
import _forensics_train as T
import torch
from _forensics_corpus import BERT_LORA_MERGE, PRUNE_FRACTION
from safetensors.torch import load_file

SIBLING_LR = 2e-4
# Bytes cut from the end of the corrupt copy's weights file (its last tensors' data).
TRUNCATE_BYTES = 4096


@dataclass(frozen=True)
class Family:
    base: Path
    finetune: Path
    sibling: Path
    lora_merge: Path
    fp16: Path
    pruned: Path
    other_init: Path
    corrupt: Path

    @property
    def candidates(self) -> dict[str, Path]:
        """The four derived candidates of compare_many, with the method each was made by."""
        return {"full_finetune": self.finetune, "lora_merge": self.lora_merge, "precision_change": self.fp16,
                "pruning": self.pruned}


def build_family(root: Path, base_dir: Path) -> Family:
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = base_dir / "config.json"
    base = load_file(str(base_dir / "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    mats = [k for k, v in base.items() if k.startswith("encoder.layer.") and v.dim() == 2]

    def save(state: D.State, name: str) -> Path:
        return D.save_state(state, root / name, config)

    with T.one_thread():
        model = T.load_bert(base_dir)
        T.bert_steps(model, tok, steps=3, lr=1e-4, seed=T.SEED)
        finetune = save(T.state_of(model), "finetune")

        model = T.load_bert(base_dir)
        T.bert_steps(model, tok, steps=3, lr=SIBLING_LR, seed=T.SEED + 1)
        sibling = save(T.state_of(model), "sibling")

        spec = BERT_LORA_MERGE
        peft_model = T.with_lora(T.load_bert(base_dir), spec["targets"], spec["r"], spec["alpha"])
        T.bert_steps(peft_model, tok, steps=2, lr=1e-3, wd=0.0)
        lora_merge = save(T.state_of(peft_model.merge_and_unload()), "lora_merge")

        torch.manual_seed(T.SEED + 11)
        fresh = BertModel(BertConfig.from_pretrained(str(base_dir)))
        T.bert_steps(fresh, tok, steps=2, lr=1e-4, seed=T.SEED + 11)
        other_init = save(T.state_of(fresh), "other_init")

    fp16 = save(D.cast(base, torch.float16), "fp16")
    pruned = save(D.apply(base, mats, lambda w: D.magnitude_prune(w, PRUNE_FRACTION)), "pruned")

    corrupt = root / "corrupt"
    shutil.copytree(finetune, corrupt)
    weights = corrupt / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - TRUNCATE_BYTES)
    return Family(base_dir, finetune, sibling, lora_merge, fp16, pruned, other_init, corrupt)
