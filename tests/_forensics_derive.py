"""Derivations shared by the forensic corpus: operations on a state dict (name -> tensor) and saving.

These are the real procedures (casts, quantize/dequantize, magnitude pruning, DARE, noise, layer
copies, re-sharding); the training procedures live in tests/_forensics_train.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

State = dict[str, torch.Tensor]


def clone(state: State) -> State:
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def save_state(state: State, out: Path, config: Path | dict | None, shards: int = 1) -> Path:
    """Write safetensors (optionally split into shards with an index) plus config.json."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    if shards == 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        names = list(tensors)
        per = -(-len(names) // shards)
        weight_map = {}
        for i in range(shards):
            part = names[i * per:(i + 1) * per]
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: tensors[k] for k in part}, str(out / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in part})
        total = sum(v.numel() * v.element_size() for v in tensors.values())
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    if isinstance(config, Path):
        shutil.copy(config, out / "config.json")
    elif isinstance(config, dict):
        (out / "config.json").write_text(json.dumps(config))
    return out


def cast(state: State, dtype: torch.dtype, keep_as: torch.dtype | None = None) -> State:
    """Cast every float tensor to dtype; keep_as stores the cast values back in that dtype (e.g. fp32)."""
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            c = v.to(dtype)
            out[k] = c.to(keep_as) if keep_as is not None else c
        else:
            out[k] = v.clone()
    return out


def quantize_rows_symmetric(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Absmax per output row, integers in [-(2^(k-1)-1), 2^(k-1)-1] (LLM.int8()-style), dequantized."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    return (w / scale).round().clamp(-qmax, qmax) * scale


def quantize_groups_asymmetric(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Min-max per group of `group` inputs with an integer zero point (GPTQ/AWQ-style), dequantized."""
    rows, cols = w.shape
    g = w.reshape(rows, cols // group, group)
    lo, hi = g.amin(dim=2, keepdim=True), g.amax(dim=2, keepdim=True)
    levels = 2**bits - 1
    scale = ((hi - lo) / levels).clamp_min(1e-12)
    zero = (-lo / scale).round()
    q = ((g / scale).round() + zero).clamp(0, levels)
    return ((q - zero) * scale).reshape(rows, cols)


def apply(state: State, names: list[str], fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    out = clone(state)
    for k in names:
        out[k] = fn(state[k].float()).to(state[k].dtype).contiguous()
    return out


def magnitude_prune(w: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero the `fraction` smallest-|w| entries of the tensor (unstructured magnitude pruning)."""
    k = round(fraction * w.numel())
    threshold = w.abs().flatten().kthvalue(k).values
    return torch.where(w.abs() <= threshold, torch.zeros_like(w), w)


def dare(base: State, tuned: State, keep: float, seed: int) -> State:
    """DARE: drop each delta entry with probability 1-keep, rescale the survivors by 1/keep."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, a in base.items():
        b = tuned[k]
        if not a.is_floating_point():
            out[k] = b.clone()
            continue
        d = b.float() - a.float()
        mask = torch.rand(d.shape, generator=g) < keep
        out[k] = (a.float() + torch.where(mask, d / keep, torch.zeros_like(d))).to(a.dtype)
    return out


def add_noise(state: State, names: list[str], rel_std: float, seed: int) -> State:
    """Gaussian noise of std rel_std·rms(W) on each named tensor."""
    g = torch.Generator().manual_seed(seed)
    out = clone(state)
    for k in names:
        w = state[k].float()
        rms = w.pow(2).mean().sqrt()
        out[k] = (w + torch.randn(w.shape, generator=g) * rel_std * rms).to(state[k].dtype)
    return out


def copy_layer(state: State, template: str, src: int, dst: int) -> State:
    """Frankenmerge step: layer dst of B becomes a copy of layer src of A."""
    out = clone(state)
    prefix_src, prefix_dst = template.format(src), template.format(dst)
    for k, v in state.items():
        if k.startswith(prefix_src):
            out[prefix_dst + k[len(prefix_src):]] = v.clone()
    return out


def delta_density(base: State, tuned: State) -> float:
    """Moved entries / entries of the tensors that moved (the source delta a DARE case starts from)."""
    moved = entries = 0
    for k, a in base.items():
        if not a.is_floating_point() or k not in tuned:
            continue
        n = int(torch.count_nonzero(tuned[k].float() - a.float()))
        if n:
            moved += n
            entries += a.numel()
    return moved / max(1, entries)
