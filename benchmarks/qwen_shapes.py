"""Tensor names, shapes and shard layout of Qwen2.5-0.5B, -1.5B and -7B (bf16), from their public configs.

Qwen2 layers: q/k/v projections carry biases, o/gate/up/down do not; two RMSNorm weights per layer.
0.5B and 1.5B tie the head to the embedding (no `lm_head.weight` in the file) and ship one
`model.safetensors`; 7B has its own head, a 152064-row vocabulary, and four shards with an index.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QwenShape:
    label: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    n_shards: int  # 1: model.safetensors; else model-0000i-of-0000n.safetensors + index.json

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def tensors(self, n_layers: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) in the order Hugging Face writes them; `n_layers` keeps only the first layers."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for layer in range(self.layers if n_layers is None else n_layers):
            p = f"model.layers.{layer}."
            out += [
                (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.q_proj.bias", (h,)),
                (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.k_proj.bias", (kv,)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.v_proj.bias", (kv,)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
            ]
        out.append(("model.norm.weight", (h,)))
        if not self.tied:
            out.append(("lm_head.weight", (self.vocab, h)))
        return out

    def config(self, n_layers: int | None = None) -> dict:
        return {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": self.hidden,
            "intermediate_size": self.intermediate, "num_hidden_layers": n_layers or self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied, "torch_dtype": "bfloat16", "hidden_act": "silu",
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
            "_name_or_path": f"synthetic/Qwen2.5-{self.label}-shaped",
        }


SHAPES = {
    "0.5B": QwenShape("0.5B", 896, 4864, 24, 14, 2, 151936, True, 1),
    "1.5B": QwenShape("1.5B", 1536, 8960, 28, 12, 2, 151936, True, 1),
    "7B": QwenShape("7B", 3584, 18944, 28, 28, 4, 152064, False, 4),
}
