"""bitsandbytes serialized checkpoints (safetensors), as transformers' save_pretrained writes them.

4-bit (nf4, fp4), per module `P`: `P.weight` uint8 (two 4-bit codes per byte, the first in the high
nibble, the weight flattened row-major), `P.weight.absmax` (one scale per block of `blocksize` entries),
`P.weight.quant_map` (the 16-entry codebook), and `P.weight.quant_state.bitsandbytes__<type>`: a uint8
tensor holding JSON (quant_type, blocksize, dtype, shape, and for double quantization nested_blocksize,
nested_offset, nested_dtype). With double quantization absmax is itself 8-bit blockwise:
`P.weight.nested_absmax` and `P.weight.nested_quant_map` restore it, plus nested_offset.
W = quant_map[code] · absmax[block].

8-bit (LLM.int8()): `P.weight` int8 [out, in] and `P.SCB` float32 [out], the absmax of each row:
W = int8 · SCB / 127.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorRef
from modeldelta_mcp.sources.quantized.base import QuantEntry, QuantIndex, QuantScheme, corrupt, quant_ref

STATE_SUFFIX = ".quant_state.bitsandbytes__"
QUANT_TYPES = ("nf4", "fp4")
# LLM.int8() maps each row's absmax to the int8 level 127.
INT8_LEVEL = 127.0
INT8_PARTS = ("weight_format",)  # bookkeeping tensors written next to SCB


def bnb_mode(cfg: dict[str, Any], where: Path) -> str:
    if cfg.get("load_in_4bit"):
        return "4bit"
    if cfg.get("load_in_8bit"):
        return "8bit"
    raise SourceError(f"{where}: bitsandbytes quantization_config declares neither load_in_4bit nor load_in_8bit")


def _state(root: Path, ref: TensorRef) -> dict[str, Any]:
    """The JSON quant state of one 4-bit weight (a few hundred bytes read from the file)."""
    try:
        with safe_open(str(root / ref.file), framework="pt") as f:
            raw = f.get_tensor(ref.name)
        state = json.loads(bytes(raw.to(torch.uint8).numpy()).decode("utf-8"))
    except Exception as exc:
        raise corrupt(root / ref.file, ref.name, "quant state is not the JSON bitsandbytes packs") from exc
    if not isinstance(state, dict):
        raise corrupt(root / ref.file, ref.name, "quant state is not a JSON object")
    return state


def _blockwise(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int, n: int) -> torch.Tensor:
    """code[codes] · absmax[block], over the first n entries (the last block may be short)."""
    vals = code.float()[codes.long().reshape(-1)[:n]]
    block = torch.arange(n) // blocksize
    if int(block[-1]) >= absmax.numel():
        raise ValueError(f"{absmax.numel()} block scales for {n} entries at block size {blocksize}")
    return vals * absmax.float().reshape(-1)[block]


def _dequant_4bit(shape: tuple[int, ...], blocksize: int, nested: dict[str, Any] | None):
    n = 1
    for s in shape:
        n *= s

    def dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
        packed = p["weight"].view(torch.uint8).reshape(-1)
        codes = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
        absmax = p["absmax"]
        if nested is not None:
            absmax = _blockwise(absmax, p["nested_absmax"], p["nested_quant_map"], nested["blocksize"],
                                absmax.numel()) + nested["offset"]
        return _blockwise(codes, absmax, p["quant_map"], blocksize, n).reshape(shape)

    return dequant


def _dequant_8bit(p: dict[str, torch.Tensor]) -> torch.Tensor:
    return p["weight"].float() * (p["SCB"].float().reshape(-1, 1) / INT8_LEVEL)


def index_bnb(stored: dict[str, TensorRef], root: Path, cfg: dict[str, Any]) -> QuantIndex:
    mode = bnb_mode(cfg, root)
    index = QuantIndex("bitsandbytes")
    used: set[str] = set()
    if mode == "4bit":
        for sname, sref in stored.items():
            if STATE_SUFFIX not in sname:
                continue
            wname = sname.split(STATE_SUFFIX)[0]  # "P.weight"
            qtype = sname.split(STATE_SUFFIX)[1]
            if qtype not in QUANT_TYPES:
                raise SourceError(f"{root}: unsupported bitsandbytes 4-bit type {qtype!r} (supported: nf4, fp4)")
            wref = stored.get(wname)
            if wref is None or f"{wname}.absmax" not in stored or f"{wname}.quant_map" not in stored:
                raise SourceError(f"{root}: bitsandbytes weight {wname} lacks its packed data, absmax or quant_map")
            state = _state(root, sref)
            shape = tuple(int(s) for s in state.get("shape") or ())
            blocksize = int(state.get("blocksize") or 0)
            n = 1
            for s in shape:
                n *= s
            if not shape or blocksize <= 0:
                raise corrupt(root / sref.file, sname, "quant state lacks the shape or blocksize")
            if wref.nbytes * 2 < n:
                raise corrupt(root / wref.file, wname, f"{wref.numel} packed bytes cannot hold {n} 4-bit values")
            parts = {"weight": wname, "absmax": f"{wname}.absmax", "quant_map": f"{wname}.quant_map"}
            nested = None
            if "nested_blocksize" in state:
                parts.update(nested_absmax=f"{wname}.nested_absmax", nested_quant_map=f"{wname}.nested_quant_map")
                if any(v not in stored for v in parts.values()):
                    raise SourceError(f"{root}: bitsandbytes weight {wname} lacks its nested absmax")
                nested = {"blocksize": int(state["nested_blocksize"]), "offset": float(state.get("nested_offset", 0))}
            scheme = QuantScheme(format="bitsandbytes", declared=qtype, number_format=qtype, bits=4,
                                 group_size=blocksize, granularity="per_block")
            ref = quant_ref(wname, shape, wref.file, wname, scheme)
            index.entries[wname] = QuantEntry(ref, parts, scheme, _dequant_4bit(shape, blocksize, nested))
            used.update(parts.values())
            used.add(sname)
    else:
        scheme = QuantScheme(format="bitsandbytes", declared="int8", number_format="int_symmetric", bits=8,
                             group_size=None, granularity="per_row")
        for sname, sref in stored.items():
            if not sname.endswith(".SCB"):
                continue
            prefix = sname[: -len(".SCB")]
            wref = stored.get(f"{prefix}.weight")
            if wref is None or wref.dtype != "int8" or len(wref.shape) != 2:
                raise SourceError(f"{root}: bitsandbytes 8-bit module {prefix} has no int8 2-D weight")
            if sref.shape != (wref.shape[0],):
                raise corrupt(root / sref.file, sname, f"shape {list(sref.shape)}, [{wref.shape[0]}] expected "
                              f"(one scale per row of {wref.name})")
            ref = quant_ref(wref.name, wref.shape, wref.file, wref.name, scheme)
            index.entries[wref.name] = QuantEntry(ref, {"weight": wref.name, "SCB": sname}, scheme, _dequant_8bit)
            used.update({wref.name, sname, *(f"{prefix}.{p}" for p in INT8_PARTS)})
    for name, ref in stored.items():
        if name not in used:
            index.plain[name] = ref
    return index
