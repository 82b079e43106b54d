"""Quantized checkpoints of a source model, written the way each tool writes them.

- bitsandbytes: by transformers + bitsandbytes themselves (from_pretrained with a BitsAndBytesConfig on
  CPU, then save_pretrained).
- compressed-tensors: by the compressed-tensors library (its qparams and per-module compressors).
- GPTQ (AutoGPTQ "gptq" format, zero points stored minus one) and AWQ (AutoAWQ GEMM): gptqmodel (a source
  build pinning numpy 2.2) and llmcompressor (pinning an older transformers) would downgrade the test
  environment and AutoAWQ is CUDA-only, so their documented layouts are packed here with round-to-nearest
  values (the reader does not care how the integers were chosen).
- FP8 with weight_scale_inv (DeepSeek-V3 layout, 128×128 blocks) or weight_scale (per tensor / per
  channel): torch's float8 cast, the layout written here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
FP8_MAX = 448.0  # largest float8_e4m3fn value


def linear_weights(state: dict[str, torch.Tensor]) -> list[str]:
    """The 2-D weights of the encoder's Linear modules (embeddings, norms and the pooler stay float)."""
    return [n for n, t in state.items() if n.endswith(".weight") and t.dim() == 2 and ".layer." in n]


def _write(src: Path, dst: Path, tensors: dict[str, torch.Tensor], qcfg: dict[str, Any] | None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    if qcfg is not None:
        cfg["quantization_config"] = qcfg
    (dst / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst / "model.safetensors"))
    return dst


def pack_bits(vals: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Unsigned values as one LSB-first bit stream per line along `axis`, in int32 words (zero padded)."""
    v = np.moveaxis(vals.astype(np.uint32), axis, -1)
    n = v.shape[-1]
    words = -(-n * bits // 32)
    bitsarr = ((v[..., :, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    stream = bitsarr.reshape(*v.shape[:-1], n * bits)
    pad = words * 32 - n * bits
    stream = np.concatenate([stream, np.zeros((*v.shape[:-1], pad), dtype=np.uint8)], axis=-1)
    packed = np.packbits(stream, axis=-1, bitorder="little").view(np.int32)
    return np.ascontiguousarray(np.moveaxis(packed, -1, axis))


def rtn_groups(w: torch.Tensor, bits: int, group: int, g_idx: torch.Tensor | None = None):
    """Asymmetric round-to-nearest per group of inputs (AutoGPTQ's Quantizer): q, scales, zeros [groups, out]."""
    out, n_in = w.shape
    g = g_idx if g_idx is not None else torch.arange(n_in) // group
    n_groups = int(g.max()) + 1
    maxq = 2**bits - 1
    scales = torch.empty(n_groups, out)
    zeros = torch.empty(n_groups, out, dtype=torch.int64)
    for k in range(n_groups):
        cols = w[:, g == k].double()
        lo = torch.clamp(cols.min(dim=1).values, max=0)
        hi = torch.clamp(cols.max(dim=1).values, min=0)
        s = ((hi - lo) / maxq).clamp_min(1e-8)
        scales[k] = s.float()
        zeros[k] = torch.round(-lo / s).long()
    s_full = scales[g].T.double()  # [out, in]
    q = torch.clamp(torch.round(w.double() / s_full) + zeros[g].T, 0, maxq).long()
    return q, scales.half(), zeros, g


def write_gptq(src: Path, dst: Path, bits: int = 4, group: int = 128, act_order: bool = False,
               v2: bool = False) -> Path:
    """AutoGPTQ's layout; v2: gptqmodel's internal "gptq_v2" format (zero points stored as they are)."""
    state = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name not in linear_weights(state):
            out[name] = t
            continue
        prefix = name[: -len(".weight")]
        w = t.float()
        g_idx = None
        if act_order:  # desc_act: groups follow the inputs' importance order (here: column norm)
            order = torch.argsort(w.norm(dim=0), descending=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel())
            g_idx = (rank // group).int()
        q, scales, zeros, g = rtn_groups(w, bits, group, g_idx)
        out[f"{prefix}.qweight"] = torch.from_numpy(pack_bits(q.T.numpy(), bits, axis=0))
        stored_zeros = zeros if v2 else zeros - 1
        out[f"{prefix}.qzeros"] = torch.from_numpy(pack_bits(stored_zeros.numpy() & (2**bits - 1), bits, axis=1))
        out[f"{prefix}.scales"] = scales
        out[f"{prefix}.g_idx"] = g.int()
    qcfg = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": act_order, "sym": False,
            "checkpoint_format": "gptq_v2" if v2 else "gptq"}
    return _write(src, dst, out, qcfg)


def fake_quant_gptq(w: torch.Tensor, bits: int, group: int, g_idx: torch.Tensor | None = None) -> torch.Tensor:
    """What the GPTQ file above decodes to (for value checks)."""
    q, scales, zeros, g = rtn_groups(w.float(), bits, group, g_idx)
    return (scales.float()[g].T * (q - zeros[g].T).float())


def write_awq(src: Path, dst: Path, group: int = 128) -> Path:
    state = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name not in linear_weights(state):
            out[name] = t
            continue
        prefix = name[: -len(".weight")]
        q, scales, zeros, _ = rtn_groups(t.float(), 4, group)
        qt = q.T.numpy()  # [in, out]

        def interleave(v: np.ndarray) -> np.ndarray:
            cols = v.shape[1]
            idx = np.array([8 * j + AWQ_ORDER[k] for j in range(cols // 8) for k in range(8)])
            return pack_bits(v[:, idx], 4, axis=1)

        out[f"{prefix}.qweight"] = torch.from_numpy(interleave(qt))
        out[f"{prefix}.qzeros"] = torch.from_numpy(interleave(zeros.numpy()))
        out[f"{prefix}.scales"] = scales
    qcfg = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    return _write(src, dst, out, qcfg)


def write_bnb(src: Path, dst: Path, mode: str) -> Path:
    """transformers + bitsandbytes: mode nf4 (double quantization), fp4, or int8."""
    from transformers import AutoModel, BitsAndBytesConfig

    if mode == "int8":
        cfg = BitsAndBytesConfig(load_in_8bit=True)
    else:
        cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=mode, bnb_4bit_use_double_quant=mode == "nf4")
    model = AutoModel.from_pretrained(str(src), quantization_config=cfg, device_map="cpu")
    model.save_pretrained(str(dst))
    return dst


def write_compressed(src: Path, dst: Path, fmt: str = "pack-quantized", bits: int = 4, group: int | None = 128,
                     symmetric: bool = True, declare_bits: int | None = None, kind: str = "int",
                     block: int | None = None) -> Path:
    """compressed-tensors: qparams and compression by the library; `declare_bits` writes a config that
    claims other bits than the values hold (a declared-versus-actual mismatch)."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams

    strategy = "block" if block else ("group" if group else "channel")
    args = QuantizationArgs(num_bits=bits, type=kind, symmetric=symmetric, strategy=strategy, group_size=group,
                            block_structure=[block, block] if block else None)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    compressor = BaseCompressor.load_from_registry(fmt)
    state = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name not in linear_weights(state):
            out[name] = t
            continue
        prefix = name[: -len(".weight")]
        w = t.float()
        if block:
            view = w.reshape(w.shape[0] // block, block, w.shape[1] // block, block)
            lo, hi = view.amin(dim=(1, 3)), view.amax(dim=(1, 3))
        else:
            view = w.reshape(w.shape[0], -1, group) if group else w.reshape(w.shape[0], 1, -1)
            lo, hi = view.amin(dim=2), view.amax(dim=2)
        scale, zp = calculate_qparams(lo, hi, args)
        local = {"weight": w, "weight_scale": scale, "weight_zero_point": zp}
        for k, v in compressor.compress(local, scheme).items():
            out[f"{prefix}.{k}"] = v
    declared = QuantizationArgs(**{**args.model_dump(), "num_bits": declare_bits or bits})
    qcfg = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=declared)},
                              format=fmt, quantization_status="compressed").model_dump(mode="json")
    qcfg["quant_method"] = "compressed-tensors"
    return _write(src, dst, out, qcfg)


def decompress_reference(ckpt: Path, module: str) -> torch.Tensor:
    """The library's own decompression of one module (the reader is checked against it)."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    cfg = json.loads((ckpt / "config.json").read_text())["quantization_config"]
    qc = QuantizationConfig.model_validate({k: v for k, v in cfg.items() if k != "quant_method"})
    scheme = qc.config_groups["group_0"]
    state = load_file(str(ckpt / "model.safetensors"))
    local = {k[len(module) + 1:]: v for k, v in state.items() if k.startswith(module + ".")}
    return BaseCompressor.load_from_registry(qc.format).decompress(local, scheme)["weight"].float()


def write_fp8(src: Path, dst: Path, granularity: str = "block", block: int = 128) -> Path:
    state = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name not in linear_weights(state):
            out[name] = t
            continue
        w = t.float()
        if granularity == "block":
            rows, cols = -(-w.shape[0] // block), -(-w.shape[1] // block)
            padded = torch.zeros(rows * block, cols * block)
            padded[: w.shape[0], : w.shape[1]] = w
            amax = padded.reshape(rows, block, cols, block).abs().amax(dim=(1, 3))
            scale = (amax / FP8_MAX).clamp_min(1e-12)
            full = scale.repeat_interleave(block, 0)[: w.shape[0]].repeat_interleave(block, 1)[:, : w.shape[1]]
            out[name] = (w / full).to(torch.float8_e4m3fn)
            out[f"{name}_scale_inv"] = scale
        else:
            amax = w.abs().amax(dim=1, keepdim=True) if granularity == "channel" else w.abs().amax().reshape(())
            scale = (amax / FP8_MAX).clamp_min(1e-12)
            out[name] = (w / scale).to(torch.float8_e4m3fn)
            out[f"{name}_scale"] = scale.float()
    qcfg: dict[str, Any] = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3"}
    if granularity == "block":
        qcfg["weight_block_size"] = [block, block]
    return _write(src, dst, out, qcfg)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
