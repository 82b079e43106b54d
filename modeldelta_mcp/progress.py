"""Progress of a comparison: one type from the engine to every surface (CLI bar, MCP notifications)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    done: int  # tensors finished
    total: int  # tensors in the comparison
    name: str  # the tensor finished last
    bytes_done: int
    bytes_total: int
    message: str | None = None  # e.g. "queued, 2 ahead" while waiting for a slot

    @property
    def fraction(self) -> float:
        if self.bytes_total:
            return self.bytes_done / self.bytes_total
        return self.done / self.total if self.total else 0.0


ProgressFn = Callable[[Progress], None]
