"""GPTQ and AWQ checkpoints written by a real quantizer on CPU: Intel's auto-round, which exports both
layouts (`auto_gptq`: qweight/qzeros/scales/g_idx; `auto_awq`: AWQ GEMM packing) with its own packing
code, and installs beside the test environment without downgrading it (gptqmodel needs a source build,
llmcompressor an older transformers, and llmcompressor writes compressed-tensors, read elsewhere).

Two ways of choosing the integers: round-to-nearest (iters=0, no calibration), and auto-round's own
signed-gradient tuning of the rounding on calibration text (iters > 0): values then sit on the grid but
are not the nearest grid point to A, as with GPTQ's error compensation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _forensics_train import SEED, lm_steps, load_bert, new_qwen, one_thread, sentences

from modeldelta_mcp.demo import demo_text


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _export(model: torch.nn.Module, tokenizer, out: Path, fmt: str, bits: int, group: int, sym: bool,
            iters: int) -> Path:
    """Quantize with auto-round and save in `fmt`; returns the directory holding the weights."""
    from auto_round import AutoRound

    tuned = dict(iters=iters, nsamples=4, seqlen=32, batch_size=2, dataset=sentences()) if iters else dict(iters=0)
    torch.manual_seed(SEED)
    with one_thread():
        ar = AutoRound(model, tokenizer=tokenizer, bits=bits, group_size=group, sym=sym, device_map="cpu", **tuned)
        ar.quantize_and_save(str(out), format=fmt)
    # auto-round writes into a subdirectory named for the scheme (e.g. w4g32)
    found = sorted(p.parent for p in out.rglob("quantization_config.json"))
    assert found, f"auto-round wrote no quantized model under {out}"
    return found[0]


def qwen_source(root: Path, trained_steps: int = 0) -> Path:
    """The tiny Qwen2 of the forensic corpus in float32 (a fine-tune of it with `trained_steps`)."""
    model = new_qwen()
    if trained_steps:
        zen, docs = demo_text()
        with one_thread():
            lm_steps(model, zen + docs, steps=trained_steps, lr=3e-3)
    out = root / f"qwen_steps{trained_steps}"
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def quantize_qwen(src: Path, out: Path, tokenizer_dir: Path, fmt: str, bits: int = 4, group: int = 32,
                  sym: bool = False, in_memory: bool = False) -> Path:
    """Round-to-nearest (auto-round's zero-shot mode); the tokenizer is only asked for, never used.

    Loaded from `src`, auto-round restores the tensors it leaves unquantized to their float32 values from
    there; `in_memory` (the untrained model built in memory, identical to the saved one) it saves them in
    bf16, as its export does for a model it cannot trace back to files."""
    from transformers import Qwen2ForCausalLM

    model = new_qwen() if in_memory else Qwen2ForCausalLM.from_pretrained(str(src), torch_dtype=torch.float32)
    return _export(model, _tokenizer(tokenizer_dir), out, fmt, bits, group, sym, iters=0)


def quantize_bert_tuned(src: Path, out: Path, bits: int = 4, group: int = 32, iters: int = 4) -> Path:
    """MiniLM with auto-round's tuned rounding on calibration sentences, exported as GPTQ."""
    return _export(load_bert(src), _tokenizer(src), out, "auto_gptq", bits, group, sym=True, iters=iters)
