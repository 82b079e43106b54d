"""One many-candidate pass that the store's jobs (one per candidate) share.

compare_many asks the job runner for every candidate's report like any single-pair request, so each
candidate is an ordinary job: stored when done, joined by a concurrent single-pair request for the same
pair, computed once. The jobs' compute functions all wait on one SharedPass: the first to start runs the
engine's many-candidate pass for every candidate that needed computing, then each job turns its own
candidate's modules into its report (the diagnosis runs in the job's own thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from modeldelta_mcp.align import Alignment
from modeldelta_mcp.compare import ResolvedPair, build_report
from modeldelta_mcp.engine.many import Candidate, ManyRun
from modeldelta_mcp.engine.run import EngineOptions
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.selection.executors import Executor, Split

Compute = Callable[[ProgressFn, threading.Event], ComparisonReport]


class _AllCancelled(threading.Event):
    """Set when every job waiting on the pass was cancelled (a pass others still wait for goes on)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[threading.Event] = []

    def is_set(self) -> bool:
        return bool(self.events) and all(e.is_set() for e in self.events)


@dataclass
class Member:
    pair: ResolvedPair
    alignment: Alignment


class SharedPass:
    def __init__(self, members: list[Member], options: EngineOptions, executor: Executor) -> None:
        if not members:
            raise ValueError("a shared pass needs at least one candidate")
        self.members = members
        self.options = options
        self.executor = executor
        self._lock = threading.Lock()
        self._started = False
        self._done = threading.Event()
        self._cancel = _AllCancelled()
        self._sinks: list[ProgressFn] = []
        self._run: ManyRun | None = None
        self._split = Split()
        self._error: BaseException | None = None
        self._seconds = 0.0

    def _progress(self, p: Progress) -> None:
        for sink in list(self._sinks):
            sink(p)

    def _execute(self) -> None:
        t0 = time.perf_counter()
        try:
            base = self.members[0].pair.a
            cands = [Candidate(m.pair.b, m.alignment.pairs) for m in self.members]
            self._run, self._split = self.executor.run_many(base, cands, self.options, progress=self._progress,
                                                            cancel=self._cancel)
        except BaseException as exc:  # every waiting job gets it
            self._error = exc
        finally:
            self._seconds = time.perf_counter() - t0
            self._done.set()

    def compute(self, k: int) -> Compute:
        """The store job's compute function for member k."""

        def compute(progress: ProgressFn, cancel: threading.Event) -> ComparisonReport:
            with self._lock:
                self._cancel.events.append(cancel)
                self._sinks.append(progress)
                starter = not self._started
                self._started = True
            if starter:
                self._execute()
            self._done.wait()  # the pass stops early only when every job waiting on it was cancelled
            if self._error is not None:
                if isinstance(self._error, ModelDeltaError):
                    raise type(self._error)(str(self._error))
                raise self._error
            return self.report(k)

        return compute

    def report(self, k: int) -> ComparisonReport:
        assert self._run is not None
        result = self._run.results[k]
        if result.error is not None or result.modules is None:
            raise ModelDeltaError(result.error or "failed")
        m = self.members[k]
        engine = {"executor": self._split.executor, "workers": self._split.workers, "tasks": self._split.tasks,
                  "retries": self._split.retries, "candidates_in_pass": len(self.members)}
        bytes_read = sum(p.nbytes for p in m.alignment.pairs)
        return build_report(m.pair, m.alignment, result.modules, self.options, self._seconds, bytes_read, engine)

    @property
    def run(self) -> ManyRun | None:
        return self._run

    @property
    def split(self) -> Split:
        return self._split
