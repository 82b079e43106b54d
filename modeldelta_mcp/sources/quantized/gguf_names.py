"""llama.cpp tensor names back to Hugging Face names, and the value transforms its converter applied.

convert_hf_to_gguf.py renames every tensor (model.layers.3.self_attn.q_proj.weight -> blk.3.attn_q.weight)
and, for some architectures, changes values: Llama (and Mistral, converted as "llama") get the rows of
Q and K permuted within each head (its `permute`: rows (head, 2, d/2) stored as (head, d/2, 2), for
rotary embeddings in llama.cpp's pairing), and the Gemma family stores RMSNorm weights as 1 + w.
This module names those per architecture; gguf.py undoes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# GGUF suffix (after "blk.N.") -> Hugging Face module path (after "model.layers.N.") of the Llama family.
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
# Gemma 2 and 3 add norms around attention and the MLP; llama.cpp's ffn_norm is then the pre-MLP one.
_GEMMA2_BLOCK = {
    **_LLAMA_BLOCK,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# Tensors llama.cpp derives for its own use, with no Hugging Face counterpart (rope frequency factors).
DERIVED = frozenset({"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"})
_BLOCK = re.compile(r"^blk\.(?P<layer>\d+)\.(?P<module>[a-z0-9_]+)\.(?P<param>weight|bias)$")


@dataclass(frozen=True)
class ArchNames:
    """How one GGUF architecture's tensors map back to Hugging Face names and values."""

    block: dict[str, str]
    permute_qk: bool  # Q/K rows permuted per head by the converter (Llama, Mistral)
    norm_plus_one: bool  # RMSNorm weights stored as 1 + w (Gemma 1-3)


ARCHITECTURES: dict[str, ArchNames] = {
    "llama": ArchNames(_LLAMA_BLOCK, permute_qk=True, norm_plus_one=False),  # also Mistral's converter output
    "mistral": ArchNames(_LLAMA_BLOCK, permute_qk=True, norm_plus_one=False),
    "qwen2": ArchNames(_LLAMA_BLOCK, permute_qk=False, norm_plus_one=False),
    "qwen3": ArchNames(_LLAMA_BLOCK, permute_qk=False, norm_plus_one=False),
    "gemma": ArchNames(_LLAMA_BLOCK, permute_qk=False, norm_plus_one=True),
    "gemma2": ArchNames(_GEMMA2_BLOCK, permute_qk=False, norm_plus_one=True),
    "gemma3": ArchNames(_GEMMA2_BLOCK, permute_qk=False, norm_plus_one=True),
}
# Hugging Face architectures[0] to write into a synthesized config (the name table reads it).
HF_ARCHITECTURE = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}


def hf_name(arch: ArchNames, gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor; None when the architecture's table does not know it."""
    m = _BLOCK.match(gguf_name)
    if m:
        module = arch.block.get(m["module"])
        return f"model.layers.{m['layer']}.{module}.{m['param']}" if module else None
    base, _, param = gguf_name.rpartition(".")
    module = _GLOBAL.get(base)
    return f"{module}.{param}" if module and param in ("weight", "bias") else None


def qk_heads(gguf_name: str) -> str | None:
    """"q" or "k" when the tensor is a query or key projection (whose rows the converter permuted)."""
    m = _BLOCK.match(gguf_name)
    if m and m["module"] in ("attn_q", "attn_k"):
        return m["module"][-1]
    return None


def is_norm(gguf_name: str) -> bool:
    m = _BLOCK.match(gguf_name)
    module = m["module"] if m else gguf_name.rpartition(".")[0]
    return module.endswith("_norm") and gguf_name.endswith(".weight")


def unpermute_rows(n_rows: int, n_head: int) -> list[int]:
    """For each Hugging Face row r of Q or K, the GGUF row holding it.

    The converter stores rows (head h, half k, j) at (head h, j, half k), d = rows per head:
    HF row h·d + k·d/2 + j sits at GGUF row h·d + 2j + k.
    """
    if n_head <= 0 or n_rows % n_head or (n_rows // n_head) % 2:
        raise ValueError(f"{n_rows} rows do not split into {n_head} heads of even size")
    d = n_rows // n_head
    half = d // 2
    out = []
    for r in range(n_rows):
        h, rem = divmod(r, d)
        k, j = divmod(rem, half)
        out.append(h * d + 2 * j + k)
    return out
