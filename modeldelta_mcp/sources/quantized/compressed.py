"""compressed-tensors checkpoints (llm-compressor's output), read from the layout the library documents.

config.json `quantization_config` (quant_method "compressed-tensors") names the storage `format` and,
per config group, the weight quantization args (num_bits, type int|float, symmetric, strategy
tensor|channel|group|block, group_size, block_structure) and the modules they target. Per module `P`:

- pack-quantized: `P.weight_packed` int32 [out, ⌈in·bits/32⌉], values + 2^(bits−1) as one LSB-first bit
  stream per row (the library's pack_to_int32), `P.weight_shape`, `P.weight_scale`, for asymmetric
  group/channel schemes `P.weight_zero_point` packed the same way along the output axis, and for
  activation-ordered groups `P.weight_g_idx`;
- int-quantized / naive-quantized / float-quantized: `P.weight` int8 or float8 and `P.weight_scale`
  (`P.weight_zero_point` unpacked when asymmetric).

W = (q − zero_point) · scale, the scale broadcast per tensor, row, group of inputs or block. The package's
tests write these files with compressed-tensors itself and check this reader against its decompressor;
decoding here keeps the library (and the transformers stack it pulls in) out of the runtime dependencies.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorRef
from modeldelta_mcp.sources.quantized import base
from modeldelta_mcp.sources.quantized.base import QuantEntry, QuantIndex, QuantScheme

PACKED = "pack-quantized"
UNPACKED = ("int-quantized", "naive-quantized", "float-quantized")
DENSE = "dense"
SUPPORTED = (PACKED, *UNPACKED, DENSE)
STRATEGY_GRANULARITY = {"tensor": "per_tensor", "channel": "per_row", "group": "per_group", "block": "per_block"}
FLOAT_FORMATS = {8: "fp8_e4m3"}  # float weights in compressed-tensors are FP8 (E4M3)


def _groups(cfg: dict[str, Any], where: Path) -> list[tuple[list[str], dict[str, Any], str]]:
    """(targets, weight args, format) per config group, in the config's order."""
    default_fmt = str(cfg.get("format") or PACKED)
    out = []
    for gname, group in (cfg.get("config_groups") or {}).items():
        if not isinstance(group, dict) or not isinstance(group.get("weights"), dict):
            continue
        fmt = str(group.get("format") or default_fmt)
        if fmt not in SUPPORTED:
            raise SourceError(f"{where}: unsupported compressed-tensors format {fmt!r} in config group {gname} "
                              f"(supported: {', '.join(SUPPORTED)})")
        out.append(([str(t) for t in group.get("targets") or []], group["weights"], fmt))
    if default_fmt not in SUPPORTED:
        raise SourceError(f"{where}: unsupported compressed-tensors format {default_fmt!r} "
                          f"(supported: {', '.join(SUPPORTED)})")
    return out


def _matches(target: str, module: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], module) is not None
    return module == target or module.endswith(f".{target}")


def _group_for(module: str, groups: list[tuple[list[str], dict[str, Any], str]]):
    """The config group whose targets name the module; a class-name target (Linear) matches any module."""
    named = [g for g in groups if any(_matches(t, module) for t in g[0])]
    if named:
        return named[0]
    return groups[0] if groups else None


def _scheme(args: dict[str, Any], fmt: str, where: Path) -> QuantScheme:
    bits = int(args.get("num_bits", 8))
    kind = str(args.get("type", "int"))
    strategy = str(args.get("strategy", "tensor"))
    if strategy not in STRATEGY_GRANULARITY:
        raise SourceError(f"{where}: unsupported compressed-tensors weight strategy {strategy!r}")
    if kind == "float":
        if bits not in FLOAT_FORMATS:
            raise SourceError(f"{where}: unsupported compressed-tensors float weights of {bits} bits")
        number = FLOAT_FORMATS[bits]
    elif kind == "int":
        number = "int_symmetric" if args.get("symmetric", True) else "int_asymmetric"
    else:
        raise SourceError(f"{where}: unsupported compressed-tensors weight type {kind!r}")
    group = args.get("group_size") if strategy == "group" else None
    if strategy == "block":
        block = args.get("block_structure") or []
        group = int(block[1]) if len(block) == 2 else None
    return QuantScheme(format="compressed-tensors", declared=fmt, number_format=number, bits=bits,
                       group_size=int(group) if group else None, granularity=STRATEGY_GRANULARITY[strategy],
                       act_order=bool(args.get("actorder")))


def _broadcast(scale: torch.Tensor, shape: tuple[int, int], granularity: str, args: dict[str, Any],
               g_idx: torch.Tensor | None) -> torch.Tensor:
    out, n_in = shape
    if granularity == "per_tensor":
        return scale.reshape(1, 1).expand(out, n_in)
    if granularity == "per_row":
        return scale.reshape(out, 1).expand(out, n_in)
    if granularity == "per_group":
        if g_idx is not None:
            return scale[:, g_idx.long()]
        size = int(args.get("group_size") or n_in)
        return scale.repeat_interleave(size, dim=1)[:, :n_in]
    b0, b1 = (int(v) for v in args.get("block_structure") or (128, 128))
    return scale.repeat_interleave(b0, dim=0)[:out].repeat_interleave(b1, dim=1)[:, :n_in]


def _dequant(fmt: str, args: dict[str, Any], scheme: QuantScheme, shape: tuple[int, int]):
    bits = scheme.bits or 8
    gran = scheme.granularity or "per_tensor"

    def dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
        out, n_in = shape
        if fmt == PACKED:
            q = base.unpack_bits(p["packed"], bits, n_in, dim=1) - (1 << (bits - 1))
        else:
            q = p["weight"]
        q = q.float()
        g_idx = p.get("g_idx")
        s = p["scale"].float()
        zp = p.get("zero_point")
        if zp is not None:
            if fmt == PACKED and gran in ("per_group", "per_row"):
                zp = base.unpack_bits(zp, bits, out, dim=0) - (1 << (bits - 1))
            q = q - _broadcast(zp.float().reshape(s.shape), shape, gran, args, g_idx)
        return q * _broadcast(s, shape, gran, args, g_idx)

    return dequant


def index_compressed(stored: dict[str, TensorRef], root: Path, cfg: dict[str, Any]) -> QuantIndex:
    groups = _groups(cfg, root)
    index = QuantIndex("compressed-tensors")
    used: set[str] = set()
    for name, ref in stored.items():
        if name.endswith(".weight_packed"):
            module = name[: -len(".weight_packed")]
        elif name.endswith(".weight") and f"{name}_scale" in stored:
            module = name[: -len(".weight")]
        else:
            continue
        group = _group_for(module, groups)
        if group is None:
            raise SourceError(f"{root}: quantized module {module} matches no compressed-tensors config group")
        _, args, fmt = group
        scheme = _scheme(args, fmt, root)
        scale = stored.get(f"{module}.weight_scale")
        if scale is None:
            raise SourceError(f"{root}: quantized module {module} has no {module}.weight_scale")
        parts = {"scale": scale.name}
        if fmt == PACKED:
            shape_ref = stored.get(f"{module}.weight_shape")
            if shape_ref is None:
                raise SourceError(f"{root}: packed module {module} has no {module}.weight_shape")
            shape = _stored_shape(root, shape_ref)
            bits = scheme.bits or 8
            want = (shape[0], base.packed_len(shape[1], bits))
            if ref.shape != want:
                raise base.corrupt(root / ref.file, name, f"shape {list(ref.shape)}, {list(want)} expected for "
                              f"{shape[0]}×{shape[1]} at {bits} bits")
            parts["packed"] = name
            used.add(shape_ref.name)
        else:
            if len(ref.shape) != 2:
                raise base.corrupt(root / ref.file, name, f"shape {list(ref.shape)}, a 2-D weight expected")
            shape = (ref.shape[0], ref.shape[1])
            parts["weight"] = name
        if scheme.granularity == "per_group" and scheme.group_size and f"{module}.weight_g_idx" not in stored:
            want_groups = math.ceil(shape[1] / scheme.group_size)
            if scale.shape != (shape[0], want_groups):
                raise base.corrupt(root / scale.file, scale.name, f"shape {list(scale.shape)}, "
                              f"{[shape[0], want_groups]} expected at group size {scheme.group_size}")
        for role, suffix in (("zero_point", "weight_zero_point"), ("g_idx", "weight_g_idx")):
            if f"{module}.{suffix}" in stored:
                parts[role] = f"{module}.{suffix}"
        wname = f"{module}.weight"
        index.entries[wname] = QuantEntry(base.quant_ref(wname, shape, ref.file, name, scheme), parts, scheme,
                                          _dequant(fmt, args, scheme, shape))
        used.update(parts.values())
    for name, ref in stored.items():
        if name not in used and not name.endswith(("input_scale", "input_zero_point", "input_global_scale")):
            index.plain[name] = ref
    return index


def _stored_shape(root: Path, ref: TensorRef) -> tuple[int, int]:
    from safetensors import safe_open

    with safe_open(str(root / ref.file), framework="pt") as f:
        vals = [int(v) for v in f.get_tensor(ref.name).reshape(-1).tolist()]
    if len(vals) != 2 or min(vals) <= 0:
        raise base.corrupt(root / ref.file, ref.name, f"weight_shape {vals} is not a 2-D shape")
    return vals[0], vals[1]
