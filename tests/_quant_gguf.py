"""GGUF test files written by the `gguf` package's writer from a Hugging Face checkpoint.

benchmarks/make_gguf.py maps names forward with gguf's own TensorNameMap (llama.cpp's table, independent
of the reader's reverse table) and applies the converter's value changes (Llama's Q/K rows permuted per
head, Gemma's norms stored as 1 + w). Q8_0 and Q4_0 come from gguf.quants; gguf has no Q4_K quantizer, so
q4_k_blocks below packs llama.cpp's block_q4_K layout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a script folder at the repo root, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import make_gguf  # noqa: E402

QK_K = 256


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


def write_gguf(src: Path, out: Path, arch: str, cfg: dict, qtype: str) -> Path:
    """GGUF of a safetensors checkpoint through benchmarks/make_gguf.py; Q4_K packed by q4_k_blocks."""
    assert cfg["model_type"] == arch
    return make_gguf.write_gguf(src, out, qtype, encode=q4_k_blocks if qtype == "Q4_K" else None)


def hf_config(root: Path) -> dict:
    import json

    return json.loads((root / "config.json").read_text())
