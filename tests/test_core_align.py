"""Alignment: wrapper prefixes, tied heads, non-float and resized tensors; roles and layers from the table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _core_ckpt import TINY_CONFIG, module, run_compare, save_checkpoint

from modeldelta_mcp.align import align
from modeldelta_mcp.architecture import default_table
from modeldelta_mcp.errors import AlignmentError
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorRef
from modeldelta_mcp.sources.formats import SAFETENSORS


def ckpt(spec: str, tensors: dict[str, tuple[tuple[int, ...], str]]) -> Checkpoint:
    """An in-memory tensor index (alignment reads headers only)."""
    refs = {n: TensorRef(n, shape, dtype, "model.safetensors") for n, (shape, dtype) in tensors.items()}
    return Checkpoint(spec=spec, source="local", root=Path("/nonexistent"), files=["model.safetensors"], tensors=refs,
                      format=SAFETENSORS)


F32 = "float32"


def test_wrapper_prefix_on_one_side_is_stripped_and_names_stay_as_stored() -> None:
    a = ckpt("a", {"embeddings.word_embeddings.weight": ((100, 8), F32),
                   "encoder.layer.0.attention.self.query.weight": ((8, 8), F32)})
    b = ckpt("b", {"bert.embeddings.word_embeddings.weight": ((100, 8), F32),
                   "bert.encoder.layer.0.attention.self.query.weight": ((8, 8), F32)})
    out = align(a, b)
    assert {p.name for p in out.pairs} == set(b.tensors)  # B's names, prefix and all
    assert not out.skipped
    q = next(p for p in out.pairs if p.role == "attn_q")
    assert q.a.name == "encoder.layer.0.attention.self.query.weight" and q.layer == 0
    # and the other way round: B without the prefix reports B's bare names
    assert {p.name for p in align(b, a).pairs} == set(a.tensors)


def test_tied_head_missing_on_one_side_pairs_with_its_embedding() -> None:
    full = ckpt("untied", {"model.embed_tokens.weight": ((100, 8), F32), "lm_head.weight": ((100, 8), F32),
                           "model.norm.weight": ((8,), F32)})
    tied = ckpt("tied", {"model.embed_tokens.weight": ((100, 8), F32), "model.norm.weight": ((8,), F32)})
    for a, b in ((full, tied), (tied, full)):
        out = align(a, b)
        head = [p for p in out.pairs if p.name == "lm_head.weight"]
        assert len(head) == 1, [p.name for p in out.pairs]
        h = head[0]
        assert h.role == "head" and not out.skipped
        side_with_head, side_without = (h.a, h.b) if a is full else (h.b, h.a)
        assert side_with_head.name == "lm_head.weight" and side_without.name == "model.embed_tokens.weight"
        assert len({p.name for p in out.pairs}) == len(out.pairs), "each module name once"


def test_gpt2_tied_head_against_wte() -> None:
    a = ckpt("a", {"transformer.wte.weight": ((50, 8), F32)})
    b = ckpt("b", {"transformer.wte.weight": ((50, 8), F32), "lm_head.weight": ((50, 8), F32)})
    names = {p.name: (p.a.name, p.role) for p in align(a, b).pairs}
    assert names["lm_head.weight"] == ("transformer.wte.weight", "head")


def test_non_float_tensors_are_skipped_with_a_reason() -> None:
    tensors = {"embeddings.position_ids": ((1, 512), "int64"), "attn.mask": ((4, 4), "bool"),
               "encoder.layer.0.output.dense.weight": ((8, 32), F32)}
    out = align(ckpt("a", tensors), ckpt("b", tensors))
    assert [p.name for p in out.pairs] == ["encoder.layer.0.output.dense.weight"]
    reasons = {s.name: s.reason for s in out.skipped}
    assert set(reasons) == {"embeddings.position_ids", "attn.mask"}
    assert "non-float" in reasons["embeddings.position_ids"] and "int64" in reasons["embeddings.position_ids"]


@pytest.mark.parametrize("rows_a,rows_b", [(100, 108), (108, 100)])
def test_vocabulary_axis_resize_is_compared_on_overlapping_rows(rows_a: int, rows_b: int) -> None:
    a = ckpt("a", {"model.embed_tokens.weight": ((rows_a, 8), F32), "lm_head.weight": ((rows_a, 8), F32),
                   "cls.predictions.bias": ((rows_a,), F32)})
    b = ckpt("b", {"model.embed_tokens.weight": ((rows_b, 8), F32), "lm_head.weight": ((rows_b, 8), F32),
                   "cls.predictions.bias": ((rows_b,), F32)})
    out = align(a, b)
    assert not out.skipped
    for p in out.pairs:
        assert (p.rows, p.rows_a, p.rows_b) == (min(rows_a, rows_b), rows_a, rows_b), p.name
    emb = next(p for p in out.pairs if p.role == "embed")
    assert emb.numel == min(rows_a, rows_b) * 8


def test_other_shape_mismatches_are_skipped_with_a_reason() -> None:
    a = ckpt("a", {"model.layers.0.self_attn.q_proj.weight": ((8, 8), F32),
                   "model.embed_tokens.weight": ((100, 8), F32), "model.norm.weight": ((8,), F32)})
    b = ckpt("b", {"model.layers.0.self_attn.q_proj.weight": ((8, 16), F32),
                   "model.embed_tokens.weight": ((100, 16), F32), "model.norm.weight": ((8,), F32)})
    out = align(a, b)
    assert [p.name for p in out.pairs] == ["model.norm.weight"]
    reasons = {s.name: s.reason for s in out.skipped}
    assert reasons["model.layers.0.self_attn.q_proj.weight"] == "shape mismatch [8, 8] vs [8, 16]"
    assert reasons["model.embed_tokens.weight"] == "shape mismatch [100, 8] vs [100, 16]"  # hidden axis changed


def test_tensors_on_one_side_only_are_listed() -> None:
    out = align(ckpt("a", {"x.weight": ((4, 4), F32), "old.weight": ((4, 4), F32)}),
                ckpt("b", {"x.weight": ((4, 4), F32), "new.weight": ((4, 4), F32)}))
    assert {(s.name, s.reason) for s in out.skipped} == {("old.weight", "only in A"), ("new.weight", "only in B")}


def test_nothing_in_common_is_an_alignment_error() -> None:
    with pytest.raises(AlignmentError, match="no float tensors in common"):
        align(ckpt("a", {"x.weight": ((4, 4), F32)}), ckpt("b", {"y.weight": ((4, 4), F32)}))


def test_resized_vocabulary_metrics_cover_the_overlap(tmp_path: Path) -> None:
    """End to end: the added rows are ignored, the overlapping rows are compared."""
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(40, 8, generator=gen)
    grown = torch.cat([emb + 0.1, torch.randn(6, 8, generator=gen)])
    save_checkpoint(tmp_path / "a", {"model.embed_tokens.weight": emb, "model.norm.weight": torch.ones(8)},
                    config=TINY_CONFIG)
    save_checkpoint(tmp_path / "b", {"model.embed_tokens.weight": grown, "model.norm.weight": torch.ones(8)},
                    config=TINY_CONFIG)
    report = run_compare(tmp_path / "a", tmp_path / "b")
    m = module(report, "model.embed_tokens.weight")
    assert (m.rows_a, m.rows_b, m.n_params) == (40, 46, 320)
    assert m.frob_norm == pytest.approx(0.1 * (320**0.5), rel=1e-5)
    assert m.n_singular_values == 8
    resized = [f for f in report.diagnostics.findings if f.code == "vocab_resized"]
    assert len(resized) == 1 and resized[0].evidence["rows_a"] == 40 and resized[0].evidence["rows_b"] == 46


# ---- roles and layers: name -> (role, layer), per architecture family -------------------------------

ROLE_TABLE = {
    "llama/qwen/mistral": {
        "model.embed_tokens.weight": ("embed", None),
        "model.layers.3.self_attn.q_proj.weight": ("attn_q", 3),
        "model.layers.3.self_attn.q_proj.bias": ("attn_q", 3),
        "model.layers.3.self_attn.k_proj.weight": ("attn_k", 3),
        "model.layers.3.self_attn.v_proj.weight": ("attn_v", 3),
        "model.layers.3.self_attn.o_proj.weight": ("attn_o", 3),
        "model.layers.3.self_attn.q_norm.weight": ("norm", 3),
        "model.layers.3.mlp.gate_proj.weight": ("mlp_gate", 3),
        "model.layers.3.mlp.up_proj.weight": ("mlp_up", 3),
        "model.layers.3.mlp.down_proj.weight": ("mlp_down", 3),
        "model.layers.3.input_layernorm.weight": ("norm", 3),
        "model.layers.3.post_attention_layernorm.weight": ("norm", 3),
        "model.norm.weight": ("norm", None),
        "lm_head.weight": ("head", None),
        "model.layers.1.block_sparse_moe.gate.weight": ("router", 1),
        "model.layers.1.block_sparse_moe.experts.7.w1.weight": ("mlp_gate", 1),
        "model.layers.1.block_sparse_moe.experts.7.w2.weight": ("mlp_down", 1),
        "model.layers.1.block_sparse_moe.experts.7.w3.weight": ("mlp_up", 1),
    },
    "gemma": {
        "model.layers.12.pre_feedforward_layernorm.weight": ("norm", 12),
        "model.layers.12.post_feedforward_layernorm.weight": ("norm", 12),
        "model.language_model.layers.2.self_attn.k_proj.weight": ("attn_k", 2),
    },
    "gpt2": {
        "transformer.wte.weight": ("embed", None),
        "transformer.wpe.weight": ("pos_embed", None),
        "transformer.h.5.ln_1.weight": ("norm", 5),
        "transformer.h.5.attn.c_attn.weight": ("attn_qkv", 5),
        "transformer.h.5.attn.c_proj.weight": ("attn_o", 5),
        "transformer.h.5.mlp.c_fc.weight": ("mlp_up", 5),
        "transformer.h.5.mlp.c_proj.weight": ("mlp_down", 5),
        "transformer.h.5.attn.bias": ("other", 5),
        "transformer.ln_f.bias": ("norm", None),
    },
    "gpt-neox": {
        "gpt_neox.embed_in.weight": ("embed", None),
        "gpt_neox.layers.2.attention.query_key_value.weight": ("attn_qkv", 2),
        "gpt_neox.layers.2.attention.dense.weight": ("attn_o", 2),
        "gpt_neox.layers.2.mlp.dense_h_to_4h.weight": ("mlp_up", 2),
        "gpt_neox.layers.2.mlp.dense_4h_to_h.weight": ("mlp_down", 2),
        "gpt_neox.layers.2.attention.rotary_emb.inv_freq": ("other", 2),
        "gpt_neox.final_layer_norm.weight": ("norm", None),
        "embed_out.weight": ("head", None),
    },
    "phi": {
        "model.layers.0.self_attn.qkv_proj.weight": ("attn_qkv", 0),  # Phi-3: fused qkv
        "model.layers.0.mlp.gate_up_proj.weight": ("mlp_gate_up", 0),
        "model.layers.0.self_attn.dense.weight": ("attn_o", 0),  # Phi-2
        "model.layers.0.mlp.fc1.weight": ("mlp_up", 0),
        "model.layers.0.mlp.fc2.weight": ("mlp_down", 0),
        "model.final_layernorm.weight": ("norm", None),
        "lm_head.bias": ("head", None),
        "transformer.embd.wte.weight": ("embed", None),  # phi-1.5 original layout
        "transformer.h.4.mixer.Wqkv.weight": ("attn_qkv", 4),
        "transformer.h.4.mixer.out_proj.weight": ("attn_o", 4),
        "transformer.h.4.ln.weight": ("norm", 4),
        "lm_head.ln.weight": ("norm", None),
        "lm_head.linear.weight": ("head", None),
    },
    "falcon": {
        "transformer.word_embeddings.weight": ("embed", None),
        "transformer.h.7.self_attention.query_key_value.weight": ("attn_qkv", 7),
        "transformer.h.7.self_attention.dense.weight": ("attn_o", 7),
        "transformer.h.7.mlp.dense_h_to_4h.weight": ("mlp_up", 7),
        "transformer.h.7.mlp.dense_4h_to_h.weight": ("mlp_down", 7),
        "transformer.h.7.input_layernorm.weight": ("norm", 7),
        "transformer.h.7.ln_attn.weight": ("norm", 7),
        "transformer.h.7.ln_mlp.bias": ("norm", 7),
        "transformer.ln_f.weight": ("norm", None),
    },
    "bert": {
        "bert.embeddings.word_embeddings.weight": ("embed", None),
        "embeddings.position_embeddings.weight": ("pos_embed", None),
        "embeddings.token_type_embeddings.weight": ("embed", None),
        "embeddings.LayerNorm.weight": ("norm", None),
        "encoder.layer.4.attention.self.query.weight": ("attn_q", 4),
        "encoder.layer.4.attention.self.key.bias": ("attn_k", 4),
        "encoder.layer.4.attention.self.value.weight": ("attn_v", 4),
        "encoder.layer.4.attention.output.dense.weight": ("attn_o", 4),
        "encoder.layer.4.attention.output.LayerNorm.weight": ("norm", 4),
        "encoder.layer.4.intermediate.dense.weight": ("mlp_up", 4),
        "encoder.layer.4.output.dense.weight": ("mlp_down", 4),
        "encoder.layer.4.output.LayerNorm.bias": ("norm", 4),
        "pooler.dense.weight": ("pooler", None),
        "cls.predictions.decoder.weight": ("head", None),
        "cls.predictions.bias": ("head", None),
    },
    "roberta": {
        "roberta.encoder.layer.11.attention.self.query.weight": ("attn_q", 11),
        "lm_head.decoder.weight": ("head", None),
        "lm_head.bias": ("head", None),
        "lm_head.layer_norm.weight": ("norm", None),
    },
    "mpnet": {
        "mpnet.embeddings.word_embeddings.weight": ("embed", None),
        "mpnet.encoder.layer.2.attention.attn.q.weight": ("attn_q", 2),
        "mpnet.encoder.layer.2.attention.attn.k.weight": ("attn_k", 2),
        "mpnet.encoder.layer.2.attention.attn.v.bias": ("attn_v", 2),
        "mpnet.encoder.layer.2.attention.attn.o.weight": ("attn_o", 2),
        "mpnet.encoder.layer.2.attention.LayerNorm.weight": ("norm", 2),
        "mpnet.encoder.layer.2.intermediate.dense.weight": ("mlp_up", 2),
        "mpnet.encoder.layer.2.output.dense.weight": ("mlp_down", 2),
        "mpnet.encoder.relative_attention_bias.weight": ("pos_embed", None),
        "mpnet.pooler.dense.weight": ("pooler", None),
    },
    "t5": {
        "shared.weight": ("embed", None),
        "encoder.embed_tokens.weight": ("embed", None),
        "encoder.block.3.layer.0.SelfAttention.q.weight": ("attn_q", 3),
        "encoder.block.3.layer.0.SelfAttention.k.weight": ("attn_k", 3),
        "encoder.block.3.layer.0.SelfAttention.v.weight": ("attn_v", 3),
        "encoder.block.3.layer.0.SelfAttention.o.weight": ("attn_o", 3),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": ("pos_embed", 0),
        "encoder.block.3.layer.0.layer_norm.weight": ("norm", 3),
        "decoder.block.2.layer.1.EncDecAttention.q.weight": ("attn_q", 2),
        "decoder.block.2.layer.1.EncDecAttention.o.weight": ("attn_o", 2),
        "decoder.block.2.layer.2.DenseReluDense.wi.weight": ("mlp_up", 2),
        "decoder.block.2.layer.2.DenseReluDense.wi_0.weight": ("mlp_gate", 2),
        "decoder.block.2.layer.2.DenseReluDense.wi_1.weight": ("mlp_up", 2),
        "decoder.block.2.layer.2.DenseReluDense.wo.weight": ("mlp_down", 2),
        "decoder.final_layer_norm.weight": ("norm", None),
        "lm_head.weight": ("head", None),
    },
}


@pytest.mark.parametrize("family", list(ROLE_TABLE))
def test_roles_and_layers_from_the_table(family: str) -> None:
    table = default_table()
    got = {name: (table.role(name), table.layer(name)) for name in ROLE_TABLE[family]}
    assert got == ROLE_TABLE[family]


def test_role_rules_match_whole_name_components() -> None:
    """The seed's substring trap: 'ln' inside 'down_proj' or 'q' inside 'qkv_proj' must not decide a role."""
    table = default_table()
    assert table.role("model.layers.0.mlp.down_proj.weight") == "mlp_down"
    assert table.role("model.layers.0.kln_proj.weight") == "other"
    assert table.role("model.layers.0.self_attn.qkv_proj.weight") == "attn_qkv"
    assert table.role("model.layers.0.self_attn.q_proj_extra.weight") == "other"
