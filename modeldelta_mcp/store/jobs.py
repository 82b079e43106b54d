"""Single-flight comparison jobs: identical requests compute once and every waiter sees the progress.

A job runs in a worker thread (anyio.to_thread) owned by the task group of whoever opened the JobRunner
(the MCP server's lifespan, or one command of the CLI), not by the request that started it: a repeated
request for a running report joins the job and its progress, and the work stops only when nobody has
waited for it for `cancel_grace` seconds. Jobs are keyed by report_id; the runner never sees a checkpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.limits import ComparisonQueue
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.store.results import ResultStore

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

ProgressSink = Callable[[Progress], Awaitable[None]]
# What the callers of a comparison see while another process computes it (they then read its report).
WAITING_FOR_OTHER = Progress(0, 0, "", 0, 0, message="waiting for another process computing this comparison")
# compute(progress, cancel_event) -> report; runs in a worker thread
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
        self.started = False  # False while it waits in the comparison queue
        self.queue_wait = anyio.CancelScope()  # cancelled when the last caller leaves a queued job
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
    """Single-flight of identical comparisons inside one process, with joinable progress.

    `limiter` bounds how many comparisons compute at once (the one place a server-wide limit applies): the
    others wait in its FIFO queue, their callers told "queued, N ahead". None: no limit.
    Across processes sharing the store, a comparison is computed under its entry's file lock
    (ResultStore.exclusive), so it is computed once among them too.
    """

    def __init__(self, store: ResultStore, task_group: TaskGroup, cancel_grace: float,
                 limiter: ComparisonQueue | None = None) -> None:
        self.store = store
        self._tg = task_group
        self.cancel_grace = cancel_grace
        self.limiter = limiter
        self._jobs: dict[str, Job] = {}

    def running(self, report_id: str) -> Job | None:
        job = self._jobs.get(report_id)
        return job if job is not None and not job.cancel.is_set() else None

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()

    async def cached(self, report_id: str) -> ComparisonReport | None:
        return await anyio.to_thread.run_sync(self.store.get, report_id)

    async def run(self, report_id: str, compute: Compute, sink: ProgressSink | None = None, *,
                  persist: bool = True) -> ComparisonReport:
        """The stored report, or the running job's result, or a new job's result.

        `persist=False` computes afresh in a job of its own, neither read from nor written to the store.
        """
        if not persist:
            job = Job(report_id)
            self._tg.start_soon(self._drive, job, compute, False)
            return await self.join(job, sink)
        cached = await self.cached(report_id)
        if cached is not None:
            return cached
        running = self.running(report_id)
        if running is None:
            # No await between this check and registering the job: two callers cannot both start it.
            # A job that finished while we read the store has already written its report.
            cached = self.store.get(report_id)
            if cached is not None:
                return cached
            running = Job(report_id)
            self._jobs[report_id] = running
            self._tg.start_soon(self._drive, running, compute, True)
        return await self.join(running, sink)

    async def join(self, job: Job, sink: ProgressSink | None = None) -> ComparisonReport:
        job.waiters += 1
        try:
            return await job.wait(sink)
        finally:
            job.waiters -= 1
            if job.waiters == 0 and not job.done.is_set():
                job.releases += 1
                if not job.started:  # queued: it has computed nothing a grace period could save
                    job.cancel.set()
                    job.queue_wait.cancel()
                elif self.cancel_grace <= 0:
                    job.cancel.set()
                else:
                    self._tg.start_soon(self._cancel_if_abandoned, job, job.releases)

    async def _cancel_if_abandoned(self, job: Job, releases: int) -> None:
        with anyio.move_on_after(self.cancel_grace):
            await job.done.wait()
        if job.waiters == 0 and job.releases == releases and not job.done.is_set():
            job.cancel.set()

    async def _drive(self, job: Job, compute: Compute, persist: bool) -> None:
        def publish(progress: Progress) -> None:
            try:
                anyio.from_thread.run_sync(job.publish, progress)
            except RuntimeError:
                pass  # the event loop is shutting down; the work is being cancelled anyway

        def computed() -> ComparisonReport:
            self.store.note_computation(job.report_id)
            try:
                report = compute(publish, job.cancel)
                if persist:
                    self.store.put(report)  # a full or read-only store: one warning, the answer still goes out
                    self.store.finished(job.report_id)
            except BaseException:
                self.store.note_computation(job.report_id, "cancelled" if job.cancel.is_set() else "failed")
                raise
            self.store.note_computation(job.report_id, "done")
            return report

        def work() -> ComparisonReport:
            if not persist:
                return computed()
            with self.store.exclusive(job.report_id, job.cancel, lambda: publish(WAITING_FOR_OTHER)):
                stored = self.store.get(job.report_id)  # another process computed it while we waited
                return stored if stored is not None else computed()

        async def queued(ahead: int) -> None:
            job.publish(Progress(0, 0, "", 0, 0, message=f"queued, {ahead} ahead"))

        holding = False
        try:
            if self.limiter is not None:
                with job.queue_wait:
                    await self.limiter.acquire(queued)
                    holding = True
                if not holding:  # every caller left while it was queued
                    job.finish(None, ModelDeltaError("comparison cancelled while queued"))
                    return
            job.started = True
            # Abandoned on cancellation (shutdown): the cancel event set below stops the thread at its next
            # block, whereas waiting for it here could wait forever if nobody set the event first.
            report = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            job.finish(report, None)
        except anyio.get_cancelled_exc_class():
            job.cancel.set()
            job.finish(None, ModelDeltaError("comparison cancelled: shutting down"))
            raise
        except Exception as exc:
            job.finish(None, exc)
        finally:
            if holding and self.limiter is not None:
                self.limiter.release()
            if self._jobs.get(job.report_id) is job:
                del self._jobs[job.report_id]
