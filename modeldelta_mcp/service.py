"""The report service: a report for a pair or a report_id, written once for every surface.

A report comes from the store, from the job already computing it, or from a new job, in that order.
The CLI (`anyio.run` around one call) and the MCP server (one service for the server's lifetime) both go
through here; they differ only in the access policy they pass (the server's allowed roots; the CLI reads
anything) and in what they do with progress.

Built to carry more: a many-candidates tool resolves its base once and asks `report_for_resolved` per
candidate (identical requests still compute once), and a server-wide concurrency limit is the JobRunner's
`limiter`, the single place where comparisons start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread

from modeldelta_mcp import testhooks
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.limits import ComparisonQueue
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.store import Compute, JobRunner, PairRef, ProgressSink, ResultStore, check_report_id

# The pipeline (torch) is imported on first use, so the MCP server answers `initialize` without waiting for it.
if TYPE_CHECKING:
    from modeldelta_mcp.compare import ResolvedPair
    from modeldelta_mcp.engine import EngineOptions
    from modeldelta_mcp.select import TensorFilter
    from modeldelta_mcp.selection.executors import Executor
    from modeldelta_mcp.sources import Checkpoint
    from modeldelta_mcp.sources.spec import ModelSpec

# Test hook: seconds to sleep after each tensor, so tests can cancel or join a comparison mid-way.
TEST_DELAY_ENV = "MODELDELTA_MCP_TEST_DELAY_S"


class Access(Protocol):
    """What a caller may read: checked on the spec before anything is read, then on the resolved files."""

    def check_spec(self, spec: ModelSpec, what: str) -> None: ...

    def check_checkpoint(self, root: Path, files: list[str], what: str) -> None: ...


def _test_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(TEST_DELAY_ENV, "0")))
    except ValueError:
        return 0.0


class ReportService:
    """Reports for pairs and report_ids over one store and one job runner.

    `token`/`quiet` go to hub resolution (the CLI's --token; the server uses HF_TOKEN from the environment).
    """

    def __init__(self, store: ResultStore, jobs: JobRunner, *, token: str | None = None, quiet: bool = True,
                 executor: Executor | None = None) -> None:
        self.store = store
        self.jobs = jobs
        self.token = token
        self.quiet = quiet
        self.executor = executor  # where comparisons run (selection/executors.py); None: this process

    @classmethod
    @asynccontextmanager
    async def open(cls, store: ResultStore, *, cancel_grace: float = 0.0, limiter: ComparisonQueue | None = None,
                   token: str | None = None, quiet: bool = True,
                   executor: Executor | None = None) -> AsyncIterator[ReportService]:
        """A service whose jobs live in a task group of its own; leaving it cancels whatever still runs."""
        async with anyio.create_task_group() as tg:
            jobs = JobRunner(store, tg, cancel_grace, limiter)
            try:
                yield cls(store, jobs, token=token, quiet=quiet, executor=executor)
            finally:
                jobs.cancel_all()  # the worker threads check this between blocks
                tg.cancel_scope.cancel()

    # ---- resolving -------------------------------------------------------------------------------

    async def resolve_pair(self, model_a: str | None, model_b: str, access: Access | None = None,
                           selection: TensorFilter | None = None, download: bool = False) -> ResolvedPair:
        """Both checkpoints resolved (hub download, hub headers, or local headers), each checked before and
        after. `model_a` None: the base B names (card or adapter config; lineage.py), checked like a given one.
        `selection` narrows the comparison: a hub checkpoint is then streamed (sources/hub_checkpoint.py)."""
        from modeldelta_mcp.compare import ResolvedPair
        from modeldelta_mcp.select import NO_FILTER
        from modeldelta_mcp.sources.spec import ModelSpec

        selection = selection or NO_FILTER
        # Parsed once: the access check sees exactly what the resolver will read. Both specs are checked
        # before either checkpoint is read (B's card or adapter config is read only once B is allowed).
        spec_b = ModelSpec.parse(model_b)
        if access is not None:
            access.check_spec(spec_b, "model_b")
        inferred = None
        if model_a is None:
            from modeldelta_mcp.lineage import infer_base

            inferred = await anyio.to_thread.run_sync(lambda: infer_base(spec_b, token=self.token),
                                                      abandon_on_cancel=True)
            model_a = inferred.model_a
        spec_a = ModelSpec.parse(model_a)
        if access is not None:
            access.check_spec(spec_a, "model_a")
        subset = selection.active
        a = await self._resolve(spec_a, access, "model_a", subset=subset, download=download)
        b = await self._resolve(spec_b, access, "model_b", base=a, subset=subset, download=download)
        return ResolvedPair(a, b, selection, inferred)

    async def resolve_one(self, model: str, access: Access | None = None, what: str = "model",
                          base: Checkpoint | None = None, subset: bool = False) -> Checkpoint:
        """One checkpoint; `base` is the other side of its pairs (needed to expand a PEFT adapter), so
        many candidates can be resolved against one base resolved once. `subset`: only part of it will be
        read (or only its headers), so a hub checkpoint is streamed rather than downloaded."""
        from modeldelta_mcp.sources.spec import ModelSpec

        spec = ModelSpec.parse(model)
        if access is not None:
            access.check_spec(spec, what)
        return await self._resolve(spec, access, what, base, subset=subset)

    async def _resolve(self, spec: ModelSpec, access: Access | None, what: str, base: Checkpoint | None = None,
                       subset: bool = False, download: bool = False) -> Checkpoint:
        from modeldelta_mcp.sources import resolve
        from modeldelta_mcp.sources.remote import REMOTE_FORMAT

        ckpt = await anyio.to_thread.run_sync(
            lambda: resolve(spec, token=self.token, quiet=self.quiet, base=base, subset=subset, download=download),
            abandon_on_cancel=True)
        # e.g. a symlinked shard outside the roots; a streamed hub checkpoint has no local files
        if access is not None and ckpt.fmt != REMOTE_FORMAT:
            access.check_checkpoint(ckpt.root, list(ckpt.files), what)
        return ckpt

    def pair_of(self, report_id: str) -> PairRef | None:
        """What a report_id was computed from (None when unknown or malformed)."""
        try:
            return self.store.lookup(check_report_id(report_id))
        except ModelDeltaError:
            return None

    # ---- reports ---------------------------------------------------------------------------------

    async def report_for_pair(self, model_a: str | None, model_b: str, options: EngineOptions | None = None, *,
                              access: Access | None = None, sink: ProgressSink | None = None,
                              any_options: bool = False, use_store: bool = True,
                              selection: TensorFilter | None = None, download: bool = False) -> ComparisonReport:
        """The report of A -> B under `options` (A inferred from B when None; see resolve_pair).

        `any_options`: a stored report of this pair under other options will do (the reading tools).
        `use_store=False`: compute afresh, neither reading nor writing the store (the CLI's --no-cache).
        """
        from modeldelta_mcp.engine import EngineOptions

        pair = await self.resolve_pair(model_a, model_b, access, selection, download)
        report = await self.report_for_resolved(pair, options or EngineOptions(), sink=sink,
                                                any_options=any_options, use_store=use_store)
        if pair.base_inferred is not None:  # a stored report may have been computed with model_a given
            report = report.model_copy(update={"base_inferred": pair.base_inferred})
        return report

    async def report_for_resolved(self, pair: ResolvedPair, options: EngineOptions, *,
                                  sink: ProgressSink | None = None, any_options: bool = False,
                                  use_store: bool = True) -> ComparisonReport:
        """As report_for_pair, for a pair already resolved and checked (e.g. one base, many candidates)."""
        identity = pair.identity()
        report_id = pair.report_id(options)
        if not use_store:
            compute = self._compute(pair, options, None, self.executor)
            return await self.jobs.run(report_id, compute, sink, persist=False)
        if any_options and self.jobs.running(report_id) is None and await self.jobs.cached(report_id) is None:
            latest = await anyio.to_thread.run_sync(self.store.latest_for_pair, identity.pair_key)
            report = await self.jobs.cached(latest) if latest else None
            if report is not None:
                return report
        await anyio.to_thread.run_sync(lambda: self.store.remember(
            report_id, pair.a.spec, pair.b.spec, options.top_k, options.spectrum, identity.pair_key,
            pair.selection.key()))
        return await self.jobs.run(report_id, self._compute(pair, options, self.store.root, self.executor), sink)

    async def report_for_id(self, report_id: str, *, access: Access | None = None,
                            sink: ProgressSink | None = None) -> ComparisonReport:
        """The report behind a report_id: stored, joined, or recomputed from its index entry."""
        check_report_id(report_id)
        report = await self.jobs.cached(report_id)
        if report is not None:
            return report
        job = self.jobs.running(report_id)
        if job is not None:
            return await self.jobs.join(job, sink)
        ref = self.store.lookup(report_id)
        if ref is None:
            raise ModelDeltaError(f"report_id {report_id}: unknown here; call compare_checkpoints(model_a, model_b)")
        from modeldelta_mcp.engine import EngineOptions
        from modeldelta_mcp.select import TensorFilter

        selection = TensorFilter.from_key(ref.filters) if ref.filters else None
        pair = await self.resolve_pair(ref.model_a, ref.model_b, access, selection)
        # The index holds what an EngineOptions held (written by report_for_resolved), a valid SpectrumMode.
        options = EngineOptions(top_k=ref.top_k, spectrum=ref.spectrum)  # type: ignore[arg-type]
        if pair.report_id(options) != report_id:
            raise ModelDeltaError(f"report_id {report_id}: the checkpoints changed since it was computed; "
                                  "call compare_checkpoints again")
        return await self.jobs.run(report_id, self._compute(pair, options, self.store.root, self.executor), sink)

    async def report(self, model_a: str | None, model_b: str | None, report_id: str | None, *,
                     access: Access | None = None, sink: ProgressSink | None = None,
                     selection: TensorFilter | None = None) -> ComparisonReport:
        """The reading tools' argument rule: a report_id, or model_b with or without model_a (the base then
        inferred), for a report under any options."""
        if report_id:
            if not model_b or self.pair_of(report_id) is not None:
                return await self.report_for_id(report_id, access=access, sink=sink)
        if model_b:
            return await self.report_for_pair(model_a, model_b, access=access, sink=sink, any_options=True,
                                              selection=selection)
        if model_a:
            raise ModelDeltaError("give model_b too (model_a alone names no comparison), or a report_id")
        raise ModelDeltaError("give model_b (and model_a, unless B's card names its base), or the report_id "
                              "from compare_checkpoints")

    # ---- computing -------------------------------------------------------------------------------

    @staticmethod
    def _compute(pair: ResolvedPair, options: EngineOptions, journal_root: Path | None,
                 executor: Executor | None = None) -> Compute:
        """The comparison as a job runs it. With a journal root (the store's), a comparison cancelled or
        interrupted midway resumes where it stopped."""
        from modeldelta_mcp.compare import compare

        delay = _test_delay()

        def compute(progress: ProgressFn, cancel: threading.Event) -> ComparisonReport:
            def watched(p: Progress) -> None:
                if delay:
                    time.sleep(delay)
                if p.done >= testhooks.READ_PAUSE_AFTER:
                    testhooks.pause("read")  # crash tests: killed while reading and journaling
                progress(p)

            # The journal stays until the job has stored the report (JobRunner -> ResultStore.finished).
            return compare(pair, options, progress=watched, cancel=cancel, journal_root=journal_root,
                           keep_journal=journal_root is not None, executor=executor)

        return compute
