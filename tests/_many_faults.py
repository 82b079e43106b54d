"""A checkpoint whose reader fails on one tensor, every time (a corrupt region of a file, as seen by the engine).

Importable by Ray workers (the Ray tests put tests/ on the workers' PYTHONPATH), so it also drives the
"a tensor that keeps failing is reported" path of the Ray executor.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import Checkpoint, TensorReader


class FailingReader(TensorReader):
    def __init__(self, inner: TensorReader, bad: str) -> None:
        self._inner, self._bad = inner, bad
        self.releases_pages = inner.releases_pages  # type: ignore[misc]

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        if name == self._bad:
            raise SourceError(f"{name}: unreadable (test)")
        return self._inner.rows(name, start, stop)

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        if name == self._bad:
            raise SourceError(f"{name}: unreadable (test)")
        return self._inner.cols(name, start, stop)

    def full(self, name: str) -> torch.Tensor:
        return self._inner.full(name)

    def close(self) -> None:
        self._inner.close()


class FailingCheckpoint(Checkpoint):
    bad_tensor = "encoder.layer.3.attention.self.query.weight"

    def open(self) -> TensorReader:
        return FailingReader(super().open(), self.bad_tensor)


def failing(ckpt: Checkpoint) -> FailingCheckpoint:
    return FailingCheckpoint(**{f.name: getattr(ckpt, f.name) for f in fields(ckpt)})
