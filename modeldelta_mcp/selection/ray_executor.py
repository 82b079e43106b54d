"""The Ray executor: the engine's work spread over a Ray cluster (`pip install "modeldelta-mcp[ray]"`).

- Workers read their tensors from the shared source themselves: a checkpoint travels as its index (names,
  files, shapes), a worker opens the files on the shared file system, or fetches a hub checkpoint at the
  pinned commit into its own cache. Only results (ModuleDeltas, a few KB per tensor) come back.
- A worker that dies (killed, out of memory, node lost) is retried by Ray (`max_retries`). A task that
  still fails is split into one task per tensor (or candidate) to isolate the failure; a tensor that keeps
  failing fails its comparison with an error naming it, and a candidate its row, never dropped silently.
- Each task's engine runs with the task's CPU share as its torch threads (engine/run.py THREADS_ENV),
  so tasks sharing a node do not oversubscribe it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.many import Candidate, CandidateResult, ManyRun, run_many
from modeldelta_mcp.engine.run import THREADS_ENV, EngineOptions, run_engine
from modeldelta_mcp.errors import ModelDeltaError, SourceError
from modeldelta_mcp.models import ModuleDelta
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.selection.executors import Executor, PairRun, Split
from modeldelta_mcp.selection.screen import Sample, ScreenResult, screen
from modeldelta_mcp.sources.checkpoint import Checkpoint

# Attempts beyond the first that Ray makes when a task's worker dies (node lost, OOM kill).
MAX_TASK_RETRIES = 3
# Tasks per worker for one comparison's tensors: uneven tensor sizes (an embedding next to norms) balance
# out, while each task stays large enough that its scheduling cost (~ms) is noise.
TASKS_PER_WORKER = 2
# CPUs each task asks for, and its torch threads: one, so that results match a local engine run with
# one thread per task and a node runs as many tasks as it has cores.
CPUS_PER_TASK = 1
# Seconds between checks of the cancel event while waiting for tasks.
WAIT_POLL_S = 0.5
# Test hook: a file path; the first task attempt that creates it kills its own worker (a dead-worker drill).
TEST_KILL_ENV = "MODELDELTA_RAY_TEST_KILL_ONCE"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ModelDeltaError('--executor ray: Ray is not installed; pip install "modeldelta-mcp[ray]"') from None
    return ray


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RayTaskError carries the task's own exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ---- what runs on a worker --------------------------------------------------------------------------


def _worker_view(ckpt: Checkpoint) -> Checkpoint:
    """The checkpoint as this worker sees it: the same files (shared file system) or the hub at the commit."""
    if ckpt.root.is_dir() or (ckpt.root / ckpt.files[0]).exists():
        return ckpt
    if ckpt.source == "hub" and ckpt.revision:
        from modeldelta_mcp.sources import resolve

        return resolve(f"{ckpt.spec.split('@')[0]}@{ckpt.revision}")
    raise SourceError(f"{ckpt.root}: not visible on Ray worker {socket.gethostname()} "
                      "(workers read local checkpoints from a shared file system)")


def _begin(key: str, attempts: Any) -> None:
    """Count this attempt (retries = attempts beyond the first); the dead-worker drill kills one worker."""
    import ray

    ray.get(attempts.start.remote(key))
    os.environ[THREADS_ENV] = str(CPUS_PER_TASK)
    drill = os.environ.get(TEST_KILL_ENV)
    if drill:
        try:
            fd = os.open(drill, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


def _pair_task(key: str, attempts: Any, a: Checkpoint, b: Checkpoint, pairs: list[TensorPair],
               options: EngineOptions) -> tuple[list[ModuleDelta], int]:
    _begin(key, attempts)
    run = run_engine(_worker_view(a), _worker_view(b), pairs, options)
    return run.modules, run.bytes_read


def _many_task(key: str, attempts: Any, base: Checkpoint, candidates: list[Candidate],
               options: EngineOptions) -> ManyRun:
    _begin(key, attempts)
    view = [Candidate(_worker_view(c.checkpoint), c.pairs) for c in candidates]
    return run_many(_worker_view(base), view, options)


def _screen_task(key: str, attempts: Any, model: Checkpoint, pool: list[Checkpoint]) -> tuple[list[ScreenResult], int]:
    _begin(key, attempts)
    sample = Sample()
    model = _worker_view(model)
    return [screen(model, _worker_view(c), sample) for c in pool], sample.bytes_read


class _Attempts:
    """A tiny actor counting task starts (Ray retries a task under the same key)."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}

    def start(self, key: str) -> int:
        self.starts[key] = self.starts.get(key, 0) + 1
        return self.starts[key]

    def total(self) -> int:
        return sum(self.starts.values())


# ---- the driver side ---------------------------------------------------------------------------------


@dataclass
class _Job:
    key: str
    items: list[int]  # indices of the pairs (or candidates) it covers
    ref: Any = None


@dataclass
class _Gathered:
    jobs: dict[str, _Job] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)  # item -> one-line error
    submitted: int = 0


def balanced(sizes: Sequence[int], n: int) -> list[list[int]]:
    """Indices split into at most n groups of similar total size (largest first onto the lightest group)."""
    n = max(1, min(n, len(sizes)))
    groups: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        k = load.index(min(load))
        groups[k].append(i)
        load[k] += sizes[i]
    return [sorted(g) for g in groups if g]


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.requested_workers = workers
        self._attempts: Any = None
        self._remotes: dict[Callable[..., Any], Any] = {}
        self._serial = 0

    def _connect(self) -> tuple[Any, int]:
        ray = _ray()
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
                else:  # a local instance with one worker per core (or as asked)
                    ray.init(num_cpus=self.requested_workers, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR")
            except Exception as exc:
                where = f"--ray-address {self.address}" if self.address else "a local Ray instance"
                raise ModelDeltaError(f"{where}: cannot start or connect ({_one_line(exc)})") from exc
        if self._attempts is None:
            self._attempts = ray.remote(num_cpus=0)(_Attempts).remote()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(self.requested_workers or cpus, cpus) // CPUS_PER_TASK)
        return ray, workers

    def _submit(self, ray: Any, fn: Callable[..., Any], job: _Job, *args: Any) -> None:
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._remotes[fn] = ray.remote(fn).options(max_retries=MAX_TASK_RETRIES, num_cpus=CPUS_PER_TASK)
        job.ref = remote.remote(job.key, self._attempts, *args)

    def _run(self, ray: Any, jobs: list[_Job], submit: Callable[[_Job], None], splittable: bool,
             on_done: Callable[[_Job, Any], None] | None, cancel: threading.Event | None) -> _Gathered:
        """Run jobs to completion; a failed job of several items is split into one job per item."""
        out = _Gathered()
        pending: dict[Any, _Job] = {}

        def launch(job: _Job) -> None:
            submit(job)
            out.submitted += 1
            out.jobs[job.key] = job
            pending[job.ref] = job

        for job in jobs:
            launch(job)
        try:
            while pending:
                if cancel is not None and cancel.is_set():
                    raise ModelDeltaError("comparison cancelled")
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_POLL_S)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        if splittable and len(job.items) > 1:
                            for i in job.items:
                                launch(_Job(f"{job.key}/{i}", [i]))
                        else:
                            for i in job.items:
                                out.failures[i] = _one_line(exc)
                        continue
                    if on_done is not None:
                        on_done(job, result)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return out

    def _split(self, ray: Any, workers: int, jobs: list[_Job], got: _Gathered, before: int) -> Split:
        """Retries: attempts beyond one per submitted job (a dead worker), plus the jobs split off a failure."""
        attempts = ray.get(self._attempts.total.remote()) - before
        retries = max(0, attempts - got.submitted) + got.submitted - len(jobs)
        return Split("ray", min(workers, len(jobs)), len(jobs), retries)

    def _key(self, kind: str) -> str:
        self._serial += 1
        return f"{kind}-{os.getpid()}-{self._serial}"

    # ---- one comparison --------------------------------------------------------------------------

    def run_pair(self, a: Checkpoint, b: Checkpoint, pairs: list[TensorPair], options: EngineOptions,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> PairRun:
        ray, workers = self._connect()
        before = ray.get(self._attempts.total.remote())
        groups = balanced([p.nbytes for p in pairs], workers * TASKS_PER_WORKER)
        prefix = self._key("pair")
        jobs = [_Job(f"{prefix}/{k}", g) for k, g in enumerate(groups)]
        modules: dict[int, ModuleDelta] = {}
        bytes_read = 0
        total_bytes = sum(p.nbytes for p in pairs)

        def submit(job: _Job) -> None:
            self._submit(ray, _pair_task, job, a, b, [pairs[i] for i in job.items], options)

        def done(job: _Job, result: tuple[list[ModuleDelta], int]) -> None:
            nonlocal bytes_read
            mods, nbytes = result
            bytes_read += nbytes
            for i, m in zip(job.items, mods, strict=True):
                modules[i] = m
            if progress is not None:
                progress(Progress(len(modules), len(pairs), pairs[job.items[-1]].name,
                                  sum(pairs[i].nbytes for i in modules), total_bytes))

        got = self._run(ray, jobs, submit, True, done, cancel)
        if got.failures:
            listed = "; ".join(f"{pairs[i].name}: {err}" for i, err in sorted(got.failures.items())[:3])
            raise ModelDeltaError(f"{len(got.failures)} tensor(s) failed on the Ray cluster after "
                                  f"{MAX_TASK_RETRIES + 1} attempts each ({listed})")
        split = self._split(ray, workers, jobs, got, before)
        return PairRun([modules[i] for i in range(len(pairs))], bytes_read, split)

    # ---- many candidates -------------------------------------------------------------------------

    def run_many(self, base: Checkpoint, candidates: list[Candidate], options: EngineOptions,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> tuple[ManyRun, Split]:
        ray, workers = self._connect()
        t0 = time.perf_counter()
        before = ray.get(self._attempts.total.remote())
        groups = balanced([sum(p.b.nbytes for p in c.pairs) for c in candidates], workers)
        prefix = self._key("many")
        jobs = [_Job(f"{prefix}/{k}", g) for k, g in enumerate(groups)]
        results: dict[int, CandidateResult] = {}
        totals = {"base_bytes": 0, "base_reads": 0, "refined": 0}
        n_items = sum(len(c.pairs) for c in candidates)

        def submit(job: _Job) -> None:
            self._submit(ray, _many_task, job, base, [candidates[i] for i in job.items], options)

        def done(job: _Job, run: ManyRun) -> None:
            for i, r in zip(job.items, run.results, strict=True):
                results[i] = r
            totals["base_bytes"] += run.base_bytes_read
            totals["base_reads"] += run.base_reads
            totals["refined"] += run.refined
            if progress is not None:
                done_items = sum(len(candidates[i].pairs) for i in results)
                progress(Progress(done_items, n_items, candidates[job.items[-1]].checkpoint.spec, done_items,
                                  n_items))

        got = self._run(ray, jobs, submit, True, done, cancel)
        for i, err in got.failures.items():
            results[i] = CandidateResult(None, f"failed on the Ray cluster after {MAX_TASK_RETRIES + 1} attempts: "
                                         f"{err}", 0)
        run = ManyRun([results[i] for i in range(len(candidates))], totals["base_bytes"], totals["base_reads"],
                      totals["refined"], time.perf_counter() - t0)
        split = self._split(ray, workers, jobs, got, before)
        return run, split

    # ---- find_base's screen ----------------------------------------------------------------------

    def screen(self, model: Checkpoint, pool: list[Checkpoint]) -> tuple[list[ScreenResult], int, Split]:
        ray, workers = self._connect()
        before = ray.get(self._attempts.total.remote())
        groups = balanced([1] * len(pool), workers)
        prefix = self._key("screen")
        jobs = [_Job(f"{prefix}/{k}", g) for k, g in enumerate(groups)]
        results: dict[int, ScreenResult] = {}
        model_bytes = 0

        def submit(job: _Job) -> None:
            self._submit(ray, _screen_task, job, model, [pool[i] for i in job.items])

        def done(job: _Job, result: tuple[list[ScreenResult], int]) -> None:
            nonlocal model_bytes
            for i, r in zip(job.items, result[0], strict=True):
                results[i] = r
            model_bytes += result[1]

        got = self._run(ray, jobs, submit, True, done, None)
        for i, err in got.failures.items():
            results[i] = ScreenResult(pool[i].spec, False, None, None, 0, 0, {},
                                      error=f"failed on the Ray cluster: {err}")
        split = self._split(ray, workers, jobs, got, before)
        return [results[i] for i in range(len(pool))], model_bytes, split


def shutdown() -> None:
    """Disconnect from Ray (stops a local instance this process started)."""
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


__all__ = ["MAX_TASK_RETRIES", "TEST_KILL_ENV", "RayExecutor", "balanced", "shutdown"]
