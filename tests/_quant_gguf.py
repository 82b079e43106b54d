"""GGUF test files written by the `gguf` package's writer from a Hugging Face checkpoint.

Names are mapped forward with gguf's own TensorNameMap (llama.cpp's table, independent of the reader's
reverse table), and the converter's value changes are applied the way convert_hf_to_gguf.py documents
them: Llama's Q/K rows permuted per head, Gemma's norms stored as 1 + w. Q8_0 and Q4_0 come from
gguf.quants; gguf has no Q4_K quantizer, so q4_k_blocks below packs llama.cpp's block_q4_K layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

QK_K = 256


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rows (head, 2, d/2) stored as (head, d/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def q4_k_blocks(x: np.ndarray) -> np.ndarray:
    """Rows of x (columns a multiple of 256) as block_q4_K bytes: per super-block d, dmin (f16), 12 bytes
    of 6-bit sub-block scales and mins, 128 bytes of 4-bit codes; x ≈ d·sc·q − dmin·m."""
    rows, cols = x.shape
    b = x.reshape(-1, 8, 32).astype(np.float32)
    lo = np.minimum(b.min(axis=2), 0.0)
    hi = b.max(axis=2)
    step = np.maximum(hi - lo, 1e-12) / 15.0
    d = (step.max(axis=1) / 63.0).astype(np.float16)
    dmin = ((-lo).max(axis=1) / 63.0).astype(np.float16)
    d32, dmin32 = np.maximum(d.astype(np.float32), 1e-12), np.maximum(dmin.astype(np.float32), 1e-12)
    sc = np.clip(np.round(step / d32[:, None]), 1, 63).astype(np.uint8)
    mn = np.clip(np.round(-lo / dmin32[:, None]), 0, 63).astype(np.uint8)
    scale = (d32[:, None] * sc)[:, :, None]
    offset = (dmin32[:, None] * mn)[:, :, None]
    q = np.clip(np.round((b + offset) / scale), 0, 15).astype(np.uint8)
    packed_scales = np.empty((b.shape[0], 12), dtype=np.uint8)
    for i in range(4):
        packed_scales[:, i] = sc[:, i] | ((sc[:, i + 4] >> 4) << 6)
        packed_scales[:, 4 + i] = mn[:, i] | ((mn[:, i + 4] >> 4) << 6)
        packed_scales[:, 8 + i] = (sc[:, i + 4] & 0xF) | ((mn[:, i + 4] & 0xF) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(b.shape[0], 128)
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8), packed_scales, qs],
                            axis=1)
    return blocks.reshape(rows, (cols // QK_K) * 144)


def write_gguf(src: Path, out: Path, arch: str, cfg: dict, qtype: str, keep_float: tuple[str, ...] = ()) -> Path:
    """Convert a safetensors checkpoint to GGUF: 2-D weights in `qtype`, 1-D tensors in F32."""
    import gguf

    state = load_file(str(src / "model.safetensors"))
    arch_enum = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2,
                 "gemma": gguf.MODEL_ARCH.GEMMA}[arch]
    n_layers = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(arch_enum, n_layers)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_block_count(n_layers)
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_context_length(128)
    writer.add_layer_norm_rms_eps(1e-6)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for name, t in state.items():
        data = t.to(torch.float32).numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = permute(data, n_head)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = permute(data, n_kv)
        if arch == "gemma" and name.endswith("norm.weight"):
            data = data + 1
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gname is not None, name
        if data.ndim == 1 or name in keep_float:
            writer.add_tensor(gname, data.astype(np.float32))
            continue
        if qtype == "Q4_K":
            writer.add_tensor(gname, q4_k_blocks(data), raw_shape=q4_k_blocks(data).shape,
                              raw_dtype=gguf.GGMLQuantizationType.Q4_K)
            continue
        qt = gguf.GGMLQuantizationType[qtype]
        packed = gguf.quants.quantize(data, qt)
        writer.add_tensor(gname, packed, raw_shape=packed.shape, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def hf_config(root: Path) -> dict:
    import json

    return json.loads((root / "config.json").read_text())
