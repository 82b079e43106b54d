"""FP8 weights with their scales (safetensors), as DeepSeek-V3, Qwen3-FP8 and FBGEMM checkpoints ship.

Per linear module `P`: `P.weight` float8 (e4m3 or e5m2) [out, in] and a float32 multiplier,
`P.weight_scale_inv` (block-wise, [⌈out/b0⌉, ⌈in/b1⌉], b = quantization_config.weight_block_size,
128×128 in practice) or `P.weight_scale` (a scalar per tensor, or [out] / [out, 1] per output channel).
W = fp8 · scale, the scale broadcast over its block, row or the whole tensor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorRef
from modeldelta_mcp.sources.quantized.base import QuantEntry, QuantIndex, QuantScheme, corrupt, quant_ref

FP8_DTYPES = {"float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}
SCALE_SUFFIXES = ("_scale_inv", "_scale")
# Block edge when a block-wise file does not name one: DeepSeek-V3 and the FP8 releases that follow it.
DEFAULT_BLOCK = 128


def _granularity(w: TensorRef, s: TensorRef, block: tuple[int, int] | None) -> tuple[str, tuple[int, int] | None]:
    out = w.shape[0]
    cols = w.numel // max(1, out)
    if s.numel == 1:
        return "per_tensor", None
    if s.shape in ((out,), (out, 1)):
        return "per_row", None
    b = block or (DEFAULT_BLOCK, DEFAULT_BLOCK)
    if len(s.shape) == 2 and s.shape == (math.ceil(out / b[0]), math.ceil(cols / b[1])):
        return "per_block", b
    raise ValueError(f"scale shape {list(s.shape)} fits no per-tensor, per-channel or {b[0]}×{b[1]} block layout "
                     f"of weight {list(w.shape)}")


def _dequant(granularity: str, block: tuple[int, int] | None):
    def dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
        w = p["weight"].float()
        s = p["scale"].float()
        if granularity == "per_tensor":
            return w * s.reshape(())
        if granularity == "per_row":
            return w * s.reshape(-1, *([1] * (w.dim() - 1)))
        assert block is not None
        full = s.repeat_interleave(block[0], dim=0)[: w.shape[0]].repeat_interleave(block[1], dim=1)[:, : w.shape[1]]
        return w * full

    return dequant


def index_fp8(stored: dict[str, TensorRef], root: Path, cfg: dict[str, Any]) -> QuantIndex:
    raw_block = cfg.get("weight_block_size")
    block = (int(raw_block[0]), int(raw_block[1])) if isinstance(raw_block, list) and len(raw_block) == 2 else None
    index = QuantIndex("fp8")
    used: set[str] = set()
    for name, w in stored.items():
        if w.dtype not in FP8_DTYPES:
            continue
        s = next((stored[f"{name}{sfx}"] for sfx in SCALE_SUFFIXES if f"{name}{sfx}" in stored), None)
        if s is None:
            raise SourceError(f"{root}: FP8 tensor {name} has no {name}_scale or {name}_scale_inv beside it")
        try:
            gran, b = _granularity(w, s, block)
        except ValueError as exc:
            raise corrupt(root / w.file, s.name, str(exc)) from exc
        scheme = QuantScheme(format="fp8", declared="fp8", number_format=FP8_DTYPES[w.dtype],
                             bits=8, group_size=b[1] if b else None, granularity=gran)
        ref = quant_ref(name, w.shape, w.file, name, scheme)
        index.entries[name] = QuantEntry(ref, {"weight": name, "scale": s.name}, scheme, _dequant(gran, b))
        used.update({name, s.name})
    for name, ref in stored.items():
        if name not in used and not name.endswith(("input_scale", "activation_scale")):
            index.plain[name] = ref
    return index
