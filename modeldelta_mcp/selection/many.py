"""compare_many and find_base, on the report service (store hit / join a running job / compute).

compare_many: the base is resolved once; every candidate is resolved and aligned against it (a failure
becomes that candidate's row); the candidates whose reports are neither stored nor being computed share one
pass of the engine (selection/shared_pass.py); each candidate's full report is stored, so the single-pair
tools answer from the store afterwards.

find_base: the screen reads a small sample of every pool entry (selection/screen.py), decides, and runs the
exact comparison (base → MODEL) against the winner only.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import (
    CompareManyAnswer,
    ComparisonReport,
    FindBaseAnswer,
    FindBaseCandidate,
    ManyEngineInfo,
    ManyRow,
    ScreenInfo,
    SplitInfo,
)
from modeldelta_mcp.progress import ProgressFn
from modeldelta_mcp.selection import rows as R
from modeldelta_mcp.selection import screen as S
from modeldelta_mcp.selection.executors import Executor, LocalExecutor, Split

if TYPE_CHECKING:
    from modeldelta_mcp.align import Alignment
    from modeldelta_mcp.compare import ResolvedPair
    from modeldelta_mcp.engine import EngineOptions
    from modeldelta_mcp.select import TensorFilter
    from modeldelta_mcp.service import Access, ReportService
    from modeldelta_mcp.sources import Checkpoint
    from modeldelta_mcp.store import Compute, ProgressSink


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


@dataclass
class _Resolved:
    spec: str
    checkpoint: Checkpoint | None = None
    alignment: Alignment | None = None
    error: str | None = None


async def _resolve(service: ReportService, spec: str, what: str, access: Access | None,
                   base: Checkpoint | None = None, selection: TensorFilter | None = None,
                   sampled: bool = False) -> _Resolved:
    """One checkpoint (aligned against `base` when given, under the filter); a failure is kept as its one-line
    error. `sampled`: only a sample of it is read (find_base's screen): a hub checkpoint is then streamed by range
    reads rather than downloaded."""
    from modeldelta_mcp.align import align
    from modeldelta_mcp.select import NO_FILTER

    chosen = selection or NO_FILTER
    try:
        ckpt = await service.resolve_one(spec, access, what, base=base, subset=chosen.active or sampled)
        alignment = None
        if base is not None:
            alignment = await anyio.to_thread.run_sync(lambda: align(base, ckpt, selection=chosen),
                                                       abandon_on_cancel=True)
    except ModelDeltaError as exc:
        return _Resolved(spec, error=_first_line(exc))
    return _Resolved(spec, ckpt, alignment)


def _remember(service: ReportService, pair: ResolvedPair, report_id: str, options: EngineOptions) -> None:
    """Index the report_id (a report_id alone can then be recomputed), as a single-pair request does."""
    service.store.remember(report_id, pair.a.spec, pair.b.spec, options.top_k, options.spectrum,
                           pair.identity().pair_key, pair.selection.key())


def _single(pair: ResolvedPair, options: EngineOptions, executor: Executor) -> Compute:
    """A plain comparison (used when a candidate's job vanished between the store check and the run)."""
    from modeldelta_mcp.compare import compare

    def compute(progress: ProgressFn, cancel: threading.Event) -> ComparisonReport:
        return compare(pair, options, progress=progress, cancel=cancel, executor=executor)

    return compute


async def compare_many(service: ReportService, base: str, candidates: list[str], options: EngineOptions, *,
                       sort_by: str = "mean_relative_change", access: Access | None = None,
                       sink: ProgressSink | None = None, executor: Executor | None = None,
                       use_store: bool = True, selection: TensorFilter | None = None) -> CompareManyAnswer:
    """`use_store=False`: compute every candidate afresh, neither reading nor writing the store (--no-cache).
    `selection`: the include/exclude/layers filter, applied to every candidate (its reports are keyed by it)."""
    from modeldelta_mcp.compare import ResolvedPair
    from modeldelta_mcp.select import NO_FILTER
    from modeldelta_mcp.selection.shared_pass import Member, SharedPass

    if not candidates:
        raise ModelDeltaError("candidates: give at least one candidate checkpoint")
    R.sort_rows([], sort_by)  # a bad sort_by fails before anything is read
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    chosen = selection or NO_FILTER
    base_ckpt = await _resolve(service, base, "base", access, selection=chosen)
    if base_ckpt.checkpoint is None:
        raise ModelDeltaError(base_ckpt.error or f"{base}: cannot be resolved")
    resolved = [await _resolve(service, spec, f"candidates[{k}]", access, base_ckpt.checkpoint, chosen)
                for k, spec in enumerate(candidates)]
    pairs: dict[int, ResolvedPair] = {}
    rid: dict[int, str] = {}
    for k, r in enumerate(resolved):
        if r.checkpoint is not None:
            pairs[k] = ResolvedPair(base_ckpt.checkpoint, r.checkpoint, chosen)
            rid[k] = pairs[k].report_id(options)
    # Which reports must be computed: not stored, not being computed (the same pair given twice computes once).
    from_store = 0
    need: dict[str, int] = {}
    for k in pairs:
        if use_store and await service.jobs.cached(rid[k]) is not None:
            from_store += 1
        elif (not use_store or service.jobs.running(rid[k]) is None) and rid[k] not in need:
            need[rid[k]] = k
    shared = None
    if need:
        members = []
        for k in need.values():
            alignment = resolved[k].alignment
            assert alignment is not None
            members.append(Member(pairs[k], alignment))
        shared = SharedPass(members, options, executor)
    slot = {report_id: n for n, report_id in enumerate(need)}
    for k in pairs if use_store else ():
        await anyio.to_thread.run_sync(_remember, service, pairs[k], rid[k], options)
    reports: dict[int, ComparisonReport] = {}
    errors: dict[int, str] = {k: r.error or "failed" for k, r in enumerate(resolved) if r.checkpoint is None}
    first = min(pairs, default=None)

    async def one(k: int) -> None:
        n = slot.get(rid[k])
        compute = shared.compute(n) if shared is not None and n is not None else _single(pairs[k], options, executor)
        try:
            reports[k] = await service.jobs.run(rid[k], compute, sink if k == first else None, persist=use_store)
        except ModelDeltaError as exc:
            errors[k] = _first_line(exc)

    async with anyio.create_task_group() as tg:
        for k in pairs:
            tg.start_soon(one, k)
    rows: list[ManyRow] = []
    for k, spec in enumerate(candidates):
        rows.append(R.row(spec, reports[k]) if k in reports else R.error_row(spec, errors.get(k, "failed")))
    run = shared.run if shared is not None else None
    split = shared.split if shared is not None else Split()
    bytes_read = 0
    if run is not None:
        bytes_read = run.base_bytes_read + sum(r.bytes_read for r in run.results)
    engine = ManyEngineInfo(executor=split.executor, workers=split.workers, tasks=split.tasks,  # type: ignore[arg-type]
                            retries=split.retries, seconds=time.perf_counter() - t0, bytes_read=bytes_read,
                            base_reads=run.base_reads if run is not None else 0, from_store=from_store)
    return CompareManyAnswer(base=base, sort_by=sort_by, rows=R.sort_rows(rows, sort_by),  # type: ignore[arg-type]
                             engine=engine)


async def find_base(service: ReportService, model: str, pool: list[str], options: EngineOptions, *,
                    access: Access | None = None, sink: ProgressSink | None = None,
                    executor: Executor | None = None) -> FindBaseAnswer:
    from modeldelta_mcp.compare import ResolvedPair

    if not pool:
        raise ModelDeltaError("pool: give at least one candidate base checkpoint")
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    target = await _resolve(service, model, "model", access, sampled=True)
    if target.checkpoint is None:
        raise ModelDeltaError(target.error or f"{model}: cannot be resolved")
    entries = [await _resolve(service, spec, f"pool[{k}]", access, sampled=True) for k, spec in enumerate(pool)]
    ok = [k for k, e in enumerate(entries) if e.checkpoint is not None]
    pool_ckpts = [c for c in (e.checkpoint for e in entries) if c is not None]
    screened, model_bytes, split = await anyio.to_thread.run_sync(
        executor.screen, target.checkpoint, pool_ckpts, abandon_on_cancel=True)
    results: list[S.ScreenResult] = []
    by_k = dict(zip(ok, screened, strict=True))
    for k, e in enumerate(entries):
        results.append(by_k[k] if k in by_k else S.ScreenResult(e.spec, False, None, None, 0, 0, {}, error=e.error))
    for k, r in enumerate(results):
        r.candidate = pool[k]  # the entry as given
    decision = S.decide(results)
    report_id = None
    base = None
    if decision.winner is not None and decision.decision == "found":
        winner = entries[decision.winner].checkpoint
        assert winner is not None
        report = await service.report_for_resolved(ResolvedPair(winner, target.checkpoint), options, sink=sink)
        report_id, base = report.report_id, pool[decision.winner]
    # The sampled tensors are the same for every candidate of MODEL's architecture: listed once, and in a
    # candidate's evidence only where they differ (a compact answer for a pool of hundreds).
    counts = Counter(tuple(r.evidence["tensors"]) for r in results if r.evidence.get("tensors"))
    sampled = list(counts.most_common(1)[0][0]) if counts else []
    for r in results:
        if list(r.evidence.get("tensors", ())) == sampled:
            r.evidence = {k: v for k, v in r.evidence.items() if k != "tensors"}
    screen_info = ScreenInfo(roles=list(S.SCREEN_ROLES), depths=list(S.SCREEN_DEPTHS),
                             bytes_per_tensor=S.SCREEN_BYTES_PER_TENSOR, related_cosine=S.RELATED_COSINE,
                             decision_margin=S.DECISION_MARGIN, model_bytes_read=model_bytes, tensors=sampled)
    engine = SplitInfo(executor=split.executor, workers=split.workers, tasks=split.tasks,  # type: ignore[arg-type]
                       retries=split.retries, seconds=time.perf_counter() - t0,
                       bytes_read=model_bytes + sum(r.bytes_read for r in results))
    cands = [FindBaseCandidate(candidate=r.candidate, related=r.related, cosine_sim=r.cosine_sim,
                               relative_change=r.relative_change, n_tensors=r.n_tensors, bytes_read=r.bytes_read,
                               evidence=r.evidence, error=r.error)
             for r in (results[i] for i in decision.order)]
    return FindBaseAnswer(model=model, base=base, decision=decision.decision,  # type: ignore[arg-type]
                          margin=decision.margin, candidates=cands, report_id=report_id, screen=screen_info,
                          engine=engine)
