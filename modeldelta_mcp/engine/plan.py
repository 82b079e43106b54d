"""How one tensor pair is cut into blocks that fit the memory budget."""

from __future__ import annotations

from dataclasses import dataclass

from modeldelta_mcp.align import TensorPair

# Bytes held per delta entry while a block is processed: A and B upcast to float32 (8),
# the float32 delta (4) and its float64 copy for the Gram product (8), plus temporaries (4).
BYTES_PER_ENTRY = 24


@dataclass(frozen=True)
class Block:
    axis: int  # 0: rows [start, stop) of the 2-D view; 1: columns [start, stop)
    start: int
    stop: int


@dataclass(frozen=True)
class PairPlan:
    rows: int
    cols: int
    spectral: bool  # a matrix (2-D view with both sides > 1) gets a spectrum
    gram_of_rows: bool  # wide matrix: Gram ΔΔᵀ of size rows, fed column blocks
    blocks: tuple[Block, ...]

    @property
    def gram_size(self) -> int:
        return self.rows if self.gram_of_rows else self.cols


def plan_pair(pair: TensorPair, budget_bytes: int) -> PairPlan:
    shape = pair.a.shape
    if len(shape) == 0:
        return PairPlan(1, 1, False, False, (Block(0, 0, 1),))
    rows = pair.rows if pair.rows is not None else shape[0]
    cols = max(1, pair.a.numel // max(1, shape[0])) if len(shape) > 1 else 1
    spectral = len(shape) >= 2 and rows > 1 and cols > 1
    wide = spectral and rows < cols
    if wide and len(shape) == 2 and rows * cols * BYTES_PER_ENTRY > budget_bytes:
        step = max(1, budget_bytes // (rows * BYTES_PER_ENTRY))
        blocks = tuple(Block(1, c, min(cols, c + step)) for c in range(0, cols, step))
        return PairPlan(rows, cols, spectral, True, blocks)
    if wide:
        return PairPlan(rows, cols, spectral, True, (Block(0, 0, rows),))
    step = max(1, budget_bytes // (cols * BYTES_PER_ENTRY))
    blocks = tuple(Block(0, r, min(rows, r + step)) for r in range(0, rows, step))
    return PairPlan(rows, cols, spectral, False, blocks)
