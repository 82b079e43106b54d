"""Write small checkpoints in every supported layout, and run the pipeline on them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.models import ComparisonReport, ModuleDelta

TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16}


def _shards(names: list[str], n: int) -> list[list[str]]:
    size = -(-len(names) // n)
    return [names[i:i + size] for i in range(0, len(names), size)]


def save_checkpoint(root: Path, tensors: dict[str, torch.Tensor], fmt: str = "safetensors", shards: int = 1,
                    config: dict | None = None) -> Path:
    """Write `tensors` to `root` as safetensors or pytorch_model*.bin, sharded with an index json when shards > 1."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    ext, stem = ("safetensors", "model") if fmt == "safetensors" else ("bin", "pytorch_model")

    def write(part: dict[str, torch.Tensor], path: Path) -> None:
        if fmt == "safetensors":
            save_file(part, str(path), metadata={"format": "pt"})
        else:
            torch.save(part, str(path))

    if shards <= 1:
        write(tensors, root / f"{stem}.{ext}")
        return root
    groups = _shards(list(tensors), shards)
    weight_map = {}
    for i, names in enumerate(groups, start=1):
        fname = f"{stem}-{i:05d}-of-{len(groups):05d}.{ext}"
        write({n: tensors[n] for n in names}, root / fname)
        weight_map.update({n: fname for n in names})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))
    return root


def run_compare(a: Path | str, b: Path | str, top_k: int = 20, memory_budget: int | None = None) -> ComparisonReport:
    options = EngineOptions(top_k=top_k) if memory_budget is None else EngineOptions(top_k=top_k,
                                                                                     memory_budget=memory_budget)
    return compare(resolve_pair(str(a), str(b)), options)


def module(report: ComparisonReport, name: str) -> ModuleDelta:
    found = [m for m in report.modules if m.name == name]
    assert len(found) == 1, f"{name}: {len(found)} modules of that name in {[m.name for m in report.modules]}"
    return found[0]


def console_script() -> list[str]:
    """The installed `modeldelta` console script of the running interpreter's environment."""
    exe = Path(sys.executable).parent / "modeldelta"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("modeldelta")
    assert found, "the modeldelta console script is not installed (pip install -e .)"
    return [found]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*console_script(), *args], capture_output=True, text=True, env=full_env, timeout=timeout)
