"""Small checkpoint pairs for the performance tests: Qwen2-named (via benchmarks/) and spectrum cases."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a script folder at the repo root, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.make_pairs import ensure_pair  # noqa: E402
from benchmarks.qwen_shapes import QwenShape  # noqa: E402

# Qwen2 layout at toy size: q/k/v biases, GQA (2 kv heads), untied head, two shards with an index.
TINY_QWEN = QwenShape("tiny", hidden=64, intermediate=176, layers=3, heads=4, kv_heads=2, vocab=640, tied=False,
                      n_shards=2)


def tiny_qwen_pair(root: Path) -> tuple[Path, Path]:
    return ensure_pair(root, TINY_QWEN, log=lambda *_: None)


def spectrum_tensors(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A and B with the deltas the Gram routes must get right (names carry a layer for the role table)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    # tall, well conditioned: the float32 route must stand (no float64 recomputation)
    name = "model.layers.0.mlp.up_proj.weight"
    a[name] = randn(600, 96) * 0.02
    b[name] = a[name] + randn(600, 96) * 2e-4 + randn(600, 4) @ randn(4, 96) * 1e-3
    # tall, exactly low rank in float32 (a LoRA merge saved in fp32): the float32 floor must be caught
    name = "model.layers.0.mlp.gate_proj.weight"
    a[name] = randn(600, 96) * 0.02
    b[name] = a[name] + (randn(600, 3) @ randn(3, 96)) * 1e-2
    # wide, exactly low rank: ΔΔᵀ route, same catch
    name = "model.layers.0.mlp.down_proj.weight"
    a[name] = randn(96, 600) * 0.02
    b[name] = a[name] + (randn(96, 2) @ randn(2, 600)) * 1e-2
    # square dense: float64 route
    name = "model.layers.0.self_attn.q_proj.weight"
    a[name] = randn(96, 96) * 0.02
    b[name] = a[name] + randn(96, 96) * 1e-3
    # bf16 LoRA merge: rank 4 plus the bf16 rounding of the merge
    name = "model.layers.1.mlp.up_proj.weight"
    base = randn(600, 96) * 0.02
    a[name] = base.bfloat16()
    b[name] = (base + (randn(600, 4) @ randn(4, 96)) * 1e-2).bfloat16()
    for n in ("model.layers.0.input_layernorm.weight", "model.layers.1.input_layernorm.weight"):
        a[n] = 1 + 0.05 * randn(96)
        b[n] = a[n] + 1e-3 * randn(96)
    return a, b


def save_pair(root: Path, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[Path, Path]:
    for side, tensors in (("a", a), ("b", b)):
        (root / side).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / side / "model.safetensors"),
                  metadata={"format": "pt"})
    return root / "a", root / "b"


def reference_sigma(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    """svdvals in float64 of the float32 delta (the seed's definition, computed exactly)."""
    d = tb.float() - ta.float()
    return torch.linalg.svdvals(d.reshape(d.shape[0], -1).double())


def entropy_rank(sigma: torch.Tensor) -> float:
    p = sigma / sigma.sum()
    p = p[p > 1e-12]
    return float(torch.exp(-(p * torch.log(p)).sum()))
