"""find_base's cheap screen: a few mid-depth matrices, a row range of each, read from MODEL and every candidate.

What is read: the weight matrices of roles SCREEN_ROLES in the layers at SCREEN_DEPTHS of the model's
depth (up to 12 tensors), and of each a contiguous range of rows in the middle of at most
SCREEN_BYTES_PER_TENSOR bytes per side. MODEL's sample is read once and reused for every candidate.

What it tells: the cosine similarity of the sampled weights (a relative of MODEL shares its weights:
cosine near 1; a model of the same architecture trained from another initialisation has cosine ≈ 0,
since its weights are independent zero-mean draws), and the relative change ‖W_model − W_cand‖ / ‖W_cand‖
(the parent is one derivation step away, a sibling fine-tune of the same parent two: its relative change is
about √(1 + (δ_sibling/δ_model)²) times the parent's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from modeldelta_mcp.align import TensorPair, align
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.sources.checkpoint import Checkpoint

# Matrices that every fine-tune moves and that an architecture always has (one of each pair exists).
SCREEN_ROLES = ("attn_q", "attn_qkv", "attn_o", "mlp_up", "mlp_gate_up", "mlp_down")
# Depths sampled, as fractions of the layer count: away from the ends, which frozen-layer or head-only
# recipes leave untouched or rewrite.
SCREEN_DEPTHS = (0.25, 0.5, 0.75)
# Bytes read per sampled tensor and side: 1 MiB is 585 rows of a 896-wide bf16 matrix, enough entries
# (>= 100k) that an unrelated model's cosine (std ~ 1/sqrt(entries)) stays below 0.01.
SCREEN_BYTES_PER_TENSOR = 1024**2
# Cosine of the sampled weights above which a candidate counts as related: unrelated weights sit within
# ±0.01 of 0, while pruning half the entries, a 4-bit round trip or a long fine-tune keep it above 0.7.
RELATED_COSINE = 0.5
# The nearest related candidate is MODEL's base only when the next one is at least this many times farther
# (relative change). A sibling fine-tune whose own change is at least 0.57x MODEL's sits >= 1.15x farther;
# a near-copy of the parent cannot be told from it, and is reported as ambiguous.
DECISION_MARGIN = 1.15


@dataclass
class SampledTensor:
    name: str  # MODEL's name
    rows: tuple[int, int]
    data: torch.Tensor  # float64, 2-D


@dataclass
class Sample:
    """MODEL's side of the screen: what was read, keyed by MODEL's tensor name."""

    tensors: dict[str, SampledTensor] = field(default_factory=dict)
    bytes_read: int = 0


@dataclass
class ScreenResult:
    candidate: str
    related: bool
    cosine_sim: float | None
    relative_change: float | None
    n_tensors: int
    bytes_read: int
    evidence: dict[str, Any]
    error: str | None = None


def _layers(pairs: list[TensorPair]) -> list[int]:
    layers = sorted({p.layer for p in pairs if p.layer is not None})
    if not layers:
        return []
    return sorted({layers[min(len(layers) - 1, int(f * len(layers)))] for f in SCREEN_DEPTHS})


def screen_pairs(pairs: list[TensorPair]) -> list[TensorPair]:
    """The sampled matrices among aligned pairs (same shape on both sides, weights only)."""
    layers = set(_layers(pairs))
    return [p for p in pairs if p.layer in layers and p.role in SCREEN_ROLES and p.name.endswith("weight")
            and len(p.b.shape) == 2 and p.a.shape == p.b.shape]


def row_range(rows: int, cols: int, itemsize: int) -> tuple[int, int]:
    n = max(1, min(rows, SCREEN_BYTES_PER_TENSOR // max(1, cols * itemsize)))
    start = (rows - n) // 2
    return start, start + n


def _read(ckpt: Checkpoint, reads: list[tuple[str, tuple[int, int]]]) -> tuple[list[torch.Tensor], int]:
    reader = ckpt.open()
    out, nbytes = [], 0
    try:
        for name, (s, e) in reads:
            t = reader.rows(name, s, e)
            nbytes += t.numel() * t.element_size()
            out.append(t.double())
    finally:
        reader.close()
    return out, nbytes


def screen(model: Checkpoint, candidate: Checkpoint, sample: Sample) -> ScreenResult:
    """Screen one candidate (as a possible base of MODEL); MODEL's rows are read into `sample` once."""
    try:
        pairs = screen_pairs(align(candidate, model).pairs)
    except ModelDeltaError as exc:
        return ScreenResult(candidate.spec, False, None, None, 0, 0, {}, error=str(exc).splitlines()[0])
    if not pairs:
        return ScreenResult(candidate.spec, False, None, None, 0, 0,
                            {"reason": "no attention or MLP matrix of the same shape in common"})
    ranges = [row_range(p.b.shape[0], p.b.shape[1], max(p.a.nbytes, p.b.nbytes) // max(1, p.a.numel))
              for p in pairs]
    missing = [(p.b.name, r) for p, r in zip(pairs, ranges, strict=True)
               if p.b.name not in sample.tensors or sample.tensors[p.b.name].rows != r]
    if missing:
        data, nbytes = _read(model, missing)
        sample.bytes_read += nbytes
        for (name, r), t in zip(missing, data, strict=True):
            sample.tensors[name] = SampledTensor(name, r, t)
    theirs, nbytes = _read(candidate, [(p.a.name, r) for p, r in zip(pairs, ranges, strict=True)])
    cosines: dict[str, float] = {}
    relative: list[float] = []
    for p, c in zip(pairs, theirs, strict=True):
        m = sample.tensors[p.b.name].data
        nc, nm = float(c.norm()), float(m.norm())
        cosines[p.b.name] = float((c * m).sum()) / max(nc * nm, 1e-30)
        relative.append(float((m - c).norm()) / max(nc, 1e-30))
    cos = sum(cosines.values()) / len(cosines)
    rel = sum(relative) / len(relative)
    evidence: dict[str, Any] = {
        "tensors": [f"{name}[{s}:{e}]" for name, (s, e) in ((p.b.name, r) for p, r in zip(pairs, ranges, strict=True))],
        "min_cosine": min(cosines.values()),
    }
    related = math.isfinite(cos) and cos >= RELATED_COSINE
    return ScreenResult(candidate.spec, related, cos, rel, len(pairs), nbytes, evidence)


@dataclass
class Decision:
    decision: str  # found | none | ambiguous
    winner: int | None  # index into the screened list
    order: list[int]  # most likely first
    # second nearest related / nearest (relative change); None with fewer than 2 related or an exact copy
    margin: float | None


def decide(results: list[ScreenResult]) -> Decision:
    related = sorted((i for i, r in enumerate(results) if r.related),
                     key=lambda i: results[i].relative_change or 0.0)
    def closeness(i: int) -> float:
        cos = results[i].cosine_sim
        return -cos if cos is not None else 2.0

    others = sorted((i for i, r in enumerate(results) if not r.related), key=closeness)
    order = related + others
    if not related:
        return Decision("none", None, order, None)
    if len(related) == 1:
        return Decision("found", related[0], order, None)
    first, second = (results[i].relative_change or 0.0 for i in related[:2])
    if first == 0:  # MODEL is a copy of the nearest one: found unless a second copy is there too
        return Decision("found" if second > 0 else "ambiguous", related[0] if second > 0 else None, order, None)
    margin = second / first
    if margin >= DECISION_MARGIN:
        return Decision("found", related[0], order, margin)
    return Decision("ambiguous", None, order, margin)
