"""The result store: ComparisonReports persisted under a key, written atomically, computed once.

Key = resolved identities of both checkpoints (hub commit, or file names/sizes/mtimes) + the options
that change the numbers (`ResolvedPair.report_id`). A corrupt entry is treated as a miss and recomputed.

Two single-flight front doors share the same files:
- `ResultStore.get_or_compute`: blocking, for the command line.
- `JobRunner.run`: async, for the MCP server. A job runs in a worker thread (anyio.to_thread) owned by the
  server's task group, not by the request that started it, so a repeated request for a running pair joins
  the job and its progress; the work stops only when nobody has waited for it for `cancel_grace` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
from pydantic import ValidationError

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.progress import Progress, ProgressFn

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from modeldelta_mcp.compare import ResolvedPair
    from modeldelta_mcp.engine import EngineOptions

REPORT_ID_PATTERN = r"^[0-9a-f]{16}$"
_REPORT_ID = re.compile(REPORT_ID_PATTERN)
# Set to a file path to get one line per comparison actually computed (tests count them; any process).
COMPUTE_LOG_ENV = "MODELDELTA_COMPUTE_LOG"


def default_cache_dir() -> Path:
    env = os.environ.get("MODELDELTA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeldelta-mcp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; the renamed result should have the mode a plain open() would give it.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_report_id(report_id: str) -> str:
    if not _REPORT_ID.match(report_id):
        raise ModelDeltaError(f"report_id {report_id!r}: expected 16 lowercase hex characters")
    return report_id


def pair_key(pair: ResolvedPair) -> str:
    """Identity of the pair regardless of options: finds an earlier report of the same two checkpoints."""
    material = json.dumps([pair.a.identity(), pair.b.identity()])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PairRef:
    """Index entry: what a report_id was computed from, so a report_id alone can be recomputed or joined."""

    report_id: str
    model_a: str
    model_b: str
    top_k: int
    spectrum: str
    pair_key: str


class ResultStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}
        self.computations = 0  # how many comparisons this process ran

    # ---- reports -------------------------------------------------------------------------

    def _path(self, report_id: str) -> Path:
        return self.root / "reports" / f"{check_report_id(report_id)}.json"

    def get(self, report_id: str) -> ComparisonReport | None:
        path = self._path(report_id)
        try:
            return ComparisonReport.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError, OSError):
            return None  # corrupt or from an older schema: recompute

    def put(self, report: ComparisonReport) -> None:
        atomic_write_text(self._path(report.report_id), report.model_dump_json())

    # ---- index: report_id -> pair, pair -> latest report ---------------------------------------

    def remember(self, pair: ResolvedPair, options: EngineOptions) -> PairRef:
        ref = PairRef(report_id=pair.report_id(options), model_a=pair.a.spec, model_b=pair.b.spec,
                      top_k=options.top_k, spectrum=options.spectrum, pair_key=pair_key(pair))
        atomic_write_text(self.root / "index" / f"{ref.report_id}.json", json.dumps(asdict(ref)))
        atomic_write_text(self.root / "pairs" / f"{ref.pair_key}.json", json.dumps({"report_id": ref.report_id}))
        return ref

    def lookup(self, report_id: str) -> PairRef | None:
        path = self.root / "index" / f"{check_report_id(report_id)}.json"
        try:
            return PairRef(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def latest_for_pair(self, key: str) -> str | None:
        """The report_id last computed for this pair under any options, if its report is still stored."""
        try:
            report_id = json.loads((self.root / "pairs" / f"{key}.json").read_text(encoding="utf-8"))["report_id"]
            return report_id if _REPORT_ID.match(report_id) and self._path(report_id).is_file() else None
        except (OSError, ValueError, TypeError, KeyError):
            return None

    # ---- computing -----------------------------------------------------------------------------

    def note_computation(self, report_id: str, event: str = "start") -> None:
        """Count a comparison (event "start") and log its events: start, done, cancelled, failed."""
        if event == "start":
            with self._lock:
                self.computations += 1
        log = os.environ.get(COMPUTE_LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as f:  # O_APPEND: one short line per write, any process
                f.write(f"{report_id} {event} {os.getpid()} {time.time():.3f}\n")

    def get_or_compute(self, report_id: str, compute: Callable[[], ComparisonReport]) -> ComparisonReport:
        """Serve from the store, or join the running job for this key, or run it once (blocking)."""
        cached = self.get(report_id)
        if cached is not None:
            return cached
        with self._lock:
            fut = self._running.get(report_id)
            owner = fut is None
            if owner:
                fut = Future()
                self._running[report_id] = fut
        assert fut is not None
        if not owner:
            return fut.result()
        try:
            self.note_computation(report_id)
            report = compute()
            self.put(report)
            self.note_computation(report_id, "done")
            fut.set_result(report)
            return report
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._running.pop(report_id, None)


# ---- async jobs (MCP server) -------------------------------------------------------------------


ProgressSink = Callable[[Progress], Awaitable[None]]
# compute(progress_callback, cancel_event) -> report; runs in a worker thread
Compute = Callable[[ProgressFn, threading.Event], ComparisonReport]


class Job:
    """One running comparison; every request waiting on it sees its progress and its result."""

    def __init__(self, report_id: str) -> None:
        self.report_id = report_id
        self.cancel = threading.Event()
        self.done = anyio.Event()
        self.result: ComparisonReport | None = None
        self.error: BaseException | None = None
        self.latest: Progress | None = None
        self.waiters = 0
        self.releases = 0  # bumped whenever the last waiter leaves; a stale cancel timer sees it changed
        self._tick = anyio.Event()

    def publish(self, progress: Progress) -> None:
        """Called on the event loop thread (forwarded from the worker with anyio.from_thread)."""
        self.latest = progress
        self._wake()

    def finish(self, result: ComparisonReport | None, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.set()
        self._wake()

    def _wake(self) -> None:
        tick, self._tick = self._tick, anyio.Event()
        tick.set()

    async def wait(self, sink: ProgressSink | None) -> ComparisonReport:
        seen: Progress | None = None
        while not self.done.is_set():
            latest = self.latest
            if sink is not None and latest is not None and latest is not seen:
                seen = latest  # a slow client gets the newest progress, not a backlog
                await sink(latest)
                continue
            await self._tick.wait()
        if self.error is not None:
            if isinstance(self.error, ModelDeltaError):
                raise type(self.error)(str(self.error))
            raise self.error
        assert self.result is not None
        return self.result


class JobRunner:
    """Single-flight of identical comparisons inside one server process, with joinable progress."""

    def __init__(self, store: ResultStore, task_group: TaskGroup, cancel_grace: float) -> None:
        self.store = store
        self._tg = task_group
        self.cancel_grace = cancel_grace
        self._jobs: dict[str, Job] = {}

    def running(self, report_id: str) -> Job | None:
        job = self._jobs.get(report_id)
        return job if job is not None and not job.cancel.is_set() else None

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()

    async def cached(self, report_id: str) -> ComparisonReport | None:
        return await anyio.to_thread.run_sync(self.store.get, report_id)

    async def run(self, report_id: str, compute: Compute, sink: ProgressSink | None = None) -> ComparisonReport:
        """The stored report, or the running job's result, or a new job's result."""
        cached = await self.cached(report_id)
        if cached is not None:
            return cached
        job = self.running(report_id)
        if job is None:
            # No await between this check and registering the job: two callers cannot both start it.
            # A job that finished while we read the store has already written its report.
            cached = self.store.get(report_id)
            if cached is not None:
                return cached
            job = Job(report_id)
            self._jobs[report_id] = job
            self._tg.start_soon(self._drive, job, compute)
        return await self.join(job, sink)

    async def join(self, job: Job, sink: ProgressSink | None = None) -> ComparisonReport:
        job.waiters += 1
        try:
            return await job.wait(sink)
        finally:
            job.waiters -= 1
            if job.waiters == 0 and not job.done.is_set():
                job.releases += 1
                if self.cancel_grace <= 0:
                    job.cancel.set()
                else:
                    self._tg.start_soon(self._cancel_if_abandoned, job, job.releases)

    async def _cancel_if_abandoned(self, job: Job, releases: int) -> None:
        with anyio.move_on_after(self.cancel_grace):
            await job.done.wait()
        if job.waiters == 0 and job.releases == releases and not job.done.is_set():
            job.cancel.set()

    async def _drive(self, job: Job, compute: Compute) -> None:
        def publish(progress: Progress) -> None:
            try:
                anyio.from_thread.run_sync(job.publish, progress)
            except RuntimeError:
                pass  # the event loop is shutting down; the work is being cancelled anyway

        def work() -> ComparisonReport:
            self.store.note_computation(job.report_id)
            try:
                report = compute(publish, job.cancel)
                self.store.put(report)
            except BaseException:
                self.store.note_computation(job.report_id, "cancelled" if job.cancel.is_set() else "failed")
                raise
            self.store.note_computation(job.report_id, "done")
            return report

        try:
            # Abandoned on cancellation (server shutdown): the cancel event set below stops the thread at its
            # next block, whereas waiting for it here could wait forever if nobody set the event first.
            report = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            job.finish(report, None)
        except anyio.get_cancelled_exc_class():
            job.cancel.set()
            job.finish(None, ModelDeltaError("comparison cancelled: the server is shutting down"))
            raise
        except Exception as exc:
            job.finish(None, exc)
        finally:
            if self._jobs.get(job.report_id) is job:
                del self._jobs[job.report_id]
