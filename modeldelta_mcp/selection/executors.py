"""Where the engine's work runs: in this process (local) or spread over a Ray cluster (selection/ray_executor.py).

An executor runs three kinds of work, each the same engine code wherever it runs:
- one comparison (the per-tensor work: Ray splits the tensor pairs into tasks),
- the many-candidate pass (Ray splits the candidates into groups, one pass per group),
- find_base's screen of the pool (Ray screens groups of candidates in parallel).
`Split` says how the work was split; it goes into the report's engine section.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.many import Candidate, ManyRun, run_many
from modeldelta_mcp.engine.run import EngineOptions, run_engine
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ModuleDelta
from modeldelta_mcp.progress import ProgressFn
from modeldelta_mcp.selection.screen import Sample, ScreenResult, screen
from modeldelta_mcp.sources.checkpoint import Checkpoint

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Split:
    executor: str = "local"
    workers: int = 1  # processes the work ran in
    tasks: int = 1  # units of work submitted (retries not counted)
    retries: int = 0  # task attempts beyond the first (a worker died, or a task was split to isolate a failure)


@dataclass
class PairRun:
    modules: list[ModuleDelta]
    bytes_read: int
    split: Split


class Executor(ABC):
    name: str

    @abstractmethod
    def run_pair(self, a: Checkpoint, b: Checkpoint, pairs: list[TensorPair], options: EngineOptions,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> PairRun:
        """ModuleDeltas of every pair (in `pairs` order) and the bytes read."""

    @abstractmethod
    def run_many(self, base: Checkpoint, candidates: list[Candidate], options: EngineOptions,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> tuple[ManyRun, Split]:
        """Every candidate against the base (engine/many.py); a failing candidate carries its error."""

    @abstractmethod
    def screen(self, model: Checkpoint, pool: list[Checkpoint]) -> tuple[list[ScreenResult], int, Split]:
        """find_base's screen of every pool entry, and the bytes of MODEL read for it."""


class LocalExecutor(Executor):
    name = "local"

    def run_pair(self, a: Checkpoint, b: Checkpoint, pairs: list[TensorPair], options: EngineOptions,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> PairRun:
        run = run_engine(a, b, pairs, options, progress=progress, cancel=cancel)
        return PairRun(run.modules, run.bytes_read, Split())

    def run_many(self, base: Checkpoint, candidates: list[Candidate], options: EngineOptions,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> tuple[ManyRun, Split]:
        return run_many(base, candidates, options, progress=progress, cancel=cancel), Split()

    def screen(self, model: Checkpoint, pool: list[Checkpoint]) -> tuple[list[ScreenResult], int, Split]:
        sample = Sample()
        results = [screen(model, c, sample) for c in pool]
        return results, sample.bytes_read, Split()


def make_executor(name: str = "local", address: str | None = None, workers: int | None = None) -> Executor:
    if name == "local":
        if address:
            raise ModelDeltaError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        from modeldelta_mcp.selection.ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers)
    raise ModelDeltaError(f"--executor {name}: unknown executor, use {' or '.join(EXECUTORS)}")
