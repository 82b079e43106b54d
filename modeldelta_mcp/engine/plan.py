"""How one tensor pair is cut into blocks so that the engine's whole working set fits the memory budget.

The budget covers what the engine holds at once, so peak memory does not grow with the model:
float32 delta blocks in flight (the reader's, PREFETCH_DEPTH ready ones, the Gram stage's, and a
re-read for a float64 recomputation) plus the Gram matrices (the one being accumulated, and the
eigensolver's input and LAPACK's copy of it). Reads and upcasts go in CHUNK_ENTRIES pieces, so
the bf16 source and float32 temporaries stay cache-sized and are not counted per block.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.spectrum import Precision, route_for

# Ready delta blocks queued between the reader and the Gram stage: one overlaps I/O with compute.
PREFETCH_DEPTH = 1
# float32 delta blocks alive at once: the reader's, the queued ones, the Gram stage's, a float64 re-read.
BLOCKS_IN_FLIGHT = PREFETCH_DEPTH + 3
BYTES_PER_ENTRY = 4 * BLOCKS_IN_FLIGHT
# Bytes per Gram entry: the float64 accumulator (8) and, overlapped with it, the eigensolver's input
# and LAPACK's working copy of the previous tensor's Gram (up to 8 + 8).
GRAM_BYTES_PER_ENTRY = 24
# Entries read and upcast at a time (1 MB of float32 per side): keeps the elementwise passes in cache.
CHUNK_ENTRIES = 256 * 1024
# Blocks keep at least this share of the budget when the Gram reserve alone would exceed it (a budget
# too small for the model's width is then overrun by the Gram, not starved to one-row blocks).
MIN_BLOCK_SHARE = 0.125


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
    precision: Precision = "float64"  # Gram route (spectrum.route_for)

    @property
    def gram_size(self) -> int:
        return self.rows if self.gram_of_rows else self.cols

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    def chunks(self, block: Block) -> list[Block]:
        """Pieces of a block read and upcast one at a time: row ranges of a row block; of a column block,
        row ranges too (tiles of the block's columns, see SafetensorsReader.tile)."""
        if block.axis == 0:
            step = max(1, CHUNK_ENTRIES // max(1, self.cols))
            return [Block(0, s, min(block.stop, s + step)) for s in range(block.start, block.stop, step)]
        step = max(1, CHUNK_ENTRIES // max(1, block.stop - block.start))
        return [Block(0, s, min(self.rows, s + step)) for s in range(0, self.rows, step)]


def gram_reserve(rows: int, cols: int) -> int:
    n = min(rows, cols)
    return GRAM_BYTES_PER_ENTRY * n * n


def plan_pair(pair: TensorPair, budget_bytes: int, spectral_wanted: bool = True) -> PairPlan:
    shape = pair.a.shape
    if len(shape) == 0:
        return PairPlan(1, 1, False, False, (Block(0, 0, 1),))
    rows = pair.rows if pair.rows is not None else shape[0]
    cols = max(1, pair.a.numel // max(1, shape[0])) if len(shape) > 1 else 1
    spectral = len(shape) >= 2 and rows > 1 and cols > 1
    reserve = gram_reserve(rows, cols) if spectral and spectral_wanted else 0
    block_bytes = max(budget_bytes - reserve, int(budget_bytes * MIN_BLOCK_SHARE))
    block_entries = max(1, block_bytes // BYTES_PER_ENTRY)
    precision = route_for(rows, cols) if spectral else "float64"
    wide = spectral and rows < cols
    if wide and len(shape) == 2 and rows * cols > block_entries:
        step = max(1, block_entries // rows)
        blocks = tuple(Block(1, c, min(cols, c + step)) for c in range(0, cols, step))
        return PairPlan(rows, cols, spectral, True, blocks, precision)
    if wide:
        return PairPlan(rows, cols, spectral, True, (Block(0, 0, rows),), precision)
    step = max(1, block_entries // cols)
    blocks = tuple(Block(0, r, min(rows, r + step)) for r in range(0, rows, step))
    return PairPlan(rows, cols, spectral, False, blocks, precision)
