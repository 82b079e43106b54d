"""Write a synthetic checkpoint pair with Qwen2.5 tensor names, shapes, bf16 dtype and shard layout.

A is Gaussian (std 0.02 for matrices, 1 ± 0.05 for norms); B = A + a planted rank-16 delta + a dense
delta, each about 1% of ‖A‖ (a "standard" fine-tune). Values come from generators seeded by tensor
name and chunk, so B is built by regenerating A chunk by chunk: memory stays at one shard plus one chunk.
A pair directory is complete when its DONE file exists; an interrupted write is redone, a done one skipped.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.qwen_shapes import QwenShape

# Bumped whenever the values change, so stale pairs on disk are rewritten.
GENERATOR_VERSION = 1
PLANTED_RANK = 16
WEIGHT_STD = 0.02
# Each delta part is this fraction of the entry scale: ΔW/W ≈ 1.4% ("standard" band, 0.015-0.05).
DENSE_REL = 0.01
LOW_RANK_REL = 0.01
CHUNK_ENTRIES = 16 * 1024**2  # rows generated at a time: 64 MB of float32


def _gen(name: str, part: str, chunk: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{name}|{part}|{chunk}".encode()))
    return g


def _tensor(name: str, shape: tuple[int, ...], side: str) -> torch.Tensor:
    """Tensor `name` of checkpoint `side` ("a" or "b") in bf16, generated in row chunks."""
    is_norm = len(shape) == 1 and "norm" in name
    out = torch.empty(shape, dtype=torch.bfloat16)
    view = out.reshape(shape[0], -1)
    rows, cols = view.shape
    step = max(1, CHUNK_ENTRIES // cols)
    low_rank = len(shape) == 2 and side == "b"
    if low_rank:
        u = torch.randn(rows, PLANTED_RANK, generator=_gen(name, "u", 0))
        v = torch.randn(PLANTED_RANK, cols, generator=_gen(name, "v", 0))
        lr_scale = WEIGHT_STD * LOW_RANK_REL / PLANTED_RANK**0.5
    for c, r0 in enumerate(range(0, rows, step)):
        r1 = min(rows, r0 + step)
        a = torch.randn(r1 - r0, cols, generator=_gen(name, "a", c))
        a = (1.0 + 0.05 * a) if is_norm else a.mul_(WEIGHT_STD)
        if side == "b":
            scale = 0.05 if is_norm else WEIGHT_STD
            a.add_(torch.randn(r1 - r0, cols, generator=_gen(name, "dense", c)), alpha=scale * DENSE_REL)
            if low_rank:
                a.addmm_(u[r0:r1], v, alpha=lr_scale)
        view[r0:r1] = a.to(torch.bfloat16)
    return out


def shard_names(shape: QwenShape, n_layers: int | None) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Tensors per shard, cut greedily at total/n_shards bytes in file order (as save_pretrained does)."""
    tensors = shape.tensors(n_layers)
    if shape.n_shards == 1:
        return [tensors]
    total = sum(2 * math.prod(s) for _, s in tensors)
    limit = total / shape.n_shards
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, s in tensors:
        nbytes = 2 * math.prod(s)
        if shards[-1] and size + nbytes > limit and len(shards) < shape.n_shards:
            shards.append([])
            size = 0
        shards[-1].append((name, s))
        size += nbytes
    return shards


def _file_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def write_checkpoint(root: Path, shape: QwenShape, side: str, n_layers: int | None, log=print) -> None:
    root.mkdir(parents=True, exist_ok=True)
    shards = shard_names(shape, n_layers)
    files = _file_names(len(shards))
    weight_map: dict[str, str] = {}
    for fname, tensors in zip(files, shards, strict=True):
        log(f"  writing {root.name}/{fname} ({len(tensors)} tensors)")
        data = {name: _tensor(name, s, side) for name, s in tensors}
        tmp = root / f".{fname}.tmp"
        save_file(data, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, root / fname)
        del data
        weight_map.update({name: fname for name, _ in tensors})
    if len(files) > 1:
        total = sum(2 * math.prod(s) for t in shards for _, s in t)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (root / "config.json").write_text(json.dumps(shape.config(n_layers), indent=2))


def ensure_pair(data_dir: Path, shape: QwenShape, n_layers: int | None = None, log=print) -> tuple[Path, Path]:
    """Write the pair under data_dir unless a complete one of this generator version is there."""
    tag = f"qwen2.5-{shape.label}" + (f"-first{n_layers}layers" if n_layers is not None else "")
    pair_dir = data_dir / tag
    done = pair_dir / "DONE"
    stamp = json.dumps({"generator": GENERATOR_VERSION, "n_layers": n_layers})
    a, b = pair_dir / "a", pair_dir / "b"
    if done.exists() and done.read_text() == stamp:
        log(f"pair {tag}: present, not rewritten")
        return a, b
    done.unlink(missing_ok=True)
    log(f"pair {tag}: generating (bf16, planted rank-{PLANTED_RANK} + dense delta)")
    write_checkpoint(a, shape, "a", n_layers, log)
    write_checkpoint(b, shape, "b", n_layers, log)
    done.write_text(stamp)
    return a, b
