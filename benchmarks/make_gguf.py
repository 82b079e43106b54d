"""Write a GGUF file of a Hugging Face safetensors checkpoint, as llama.cpp's converter lays it out.

Names are mapped with gguf's own TensorNameMap (llama.cpp's table), Llama's Q/K rows are permuted per
head and Gemma's norms stored as 1 + w (convert_hf_to_gguf.py), 2-D weights are quantized by
gguf.quants (Q8_0, Q4_0...) and 1-D tensors kept in F32. One tensor is read from the source at a time.

    python -m benchmarks.make_gguf SRC_DIR OUT.gguf --type Q8_0
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

ARCHS = {"llama": "LLAMA", "qwen2": "QWEN2", "gemma": "GEMMA"}
Encode = Callable[[np.ndarray], np.ndarray]  # float32 rows -> the type's block bytes


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rows (head, 2, d/2) stored as (head, d/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _files(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        return [src / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(src.glob("*.safetensors"))


def write_gguf(src: Path, out: Path, qtype: str = "Q8_0", encode: Encode | None = None) -> Path:
    """`encode` packs 2-D weights for a type gguf.quants cannot quantize (it returns the block bytes)."""
    import gguf

    cfg = json.loads((src / "config.json").read_text())
    arch = cfg["model_type"]
    n_layers, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, ARCHS[arch]), n_layers)
    qt = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_block_count(n_layers)
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_context_length(cfg.get("max_position_embeddings", 2048))
    writer.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    for path in _files(src):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                data = f.get_tensor(name).to(torch.float32).numpy()
                if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
                    data = permute(data, n_head if "q_proj" in name else n_kv)
                if arch == "gemma" and name.endswith("norm.weight"):
                    data = data + 1
                gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
                if gname is None:
                    raise SystemExit(f"{name}: no GGUF name for it in llama.cpp's {arch} table")
                if data.ndim == 1:
                    writer.add_tensor(gname, data)
                    continue
                packed = encode(data) if encode is not None else gguf.quants.quantize(data, qt)
                writer.add_tensor(gname, packed, raw_shape=packed.shape, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--type", default="Q8_0", help="gguf.quants type for 2-D weights (Q8_0, Q4_0, ...)")
    args = p.parse_args()
    write_gguf(args.src, args.out, args.type)


if __name__ == "__main__":
    main()
