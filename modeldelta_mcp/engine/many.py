"""One pass of a base checkpoint against many candidates: every base tensor is read once.

The candidates that hold a base tensor (aligned pairs sharing one block plan) are served from one held
copy of each base block: the block is read once, in its stored dtype, then each candidate reads its own
block and feeds its own DeltaAccumulator and Gram through the single-pair engine's building blocks
(read_delta_block, GramAccumulator, the eigensolver stage, build_module), so every candidate's
ModuleDeltas are those of a single-pair run. Memory: one held base block, one candidate delta block in
flight, and one Gram per candidate of the current tensor (the plan's block share shrinks to make room); so
many candidates that their Grams would not fit the memory budget go in several passes (candidates_per_pass).

A candidate whose reads fail (a corrupt file) is dropped from the pass with its one-line error; the
others go on. A failing base read fails the pass.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import torch

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.accumulate import DeltaAccumulator
from modeldelta_mcp.engine.fast_spectrum import SKETCH_OVERSAMPLE, FastSpectrum
from modeldelta_mcp.engine.plan import MIN_BLOCK_SHARE, PREFETCH_DEPTH, Block, PairPlan, gram_reserve, plan_pair
from modeldelta_mcp.engine.run import (  # the single-pair engine's stages, shared inside the engine package
    HELPER_THREADS,
    MAX_READERS,
    BlockReaders,
    EngineOptions,
    _EigJob,
    _EigStage,
    available_cores,
    build_module,
    join_lanes,
    next_result,
    pick_device,
    put_until_stopped,
    read_delta_block,
    spectrum_accumulator,
)
from modeldelta_mcp.engine.spectrum import GramAccumulator
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ModuleDelta
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader

# Called when a base tensor's data is read, with its name (tests count the reads; benchmarks log them).
BaseReadFn = Callable[[str], None]


@dataclass
class Candidate:
    checkpoint: Checkpoint
    pairs: list[TensorPair]  # aligned against the base (align(base, checkpoint).pairs)


@dataclass
class CandidateResult:
    modules: list[ModuleDelta] | None  # in `pairs` order; None when the candidate failed
    error: str | None
    bytes_read: int  # bytes of the candidate's own tensors read


@dataclass
class ManyRun:
    results: list[CandidateResult]
    base_bytes_read: int
    base_reads: int  # base tensor reads: one per base tensor (plus one per distinct plan, see _Task)
    refined: int  # tensors recomputed in float64 (each re-reads its base tensor once more)
    seconds: float


@dataclass(frozen=True)
class _Item:
    serial: int
    candidate: int
    index: int  # in the candidate's pairs


@dataclass
class _Task:
    """One base tensor read once for the members sharing one plan (candidates with another overlap of a
    resized vocabulary get another plan, and another read)."""

    name: str
    plan: PairPlan
    members: list[_Item] = field(default_factory=list)


class _HeldBlock(TensorReader):
    """The base tensor's data for one block, in its stored dtype, served to every candidate in turn."""

    # read_delta_block reads column blocks tile by tile from it, as from an mmapped file.
    releases_pages = True

    def __init__(self, data: torch.Tensor, block: Block) -> None:
        self._data = data
        self._block = block

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        off = self._block.start if self._block.axis == 0 else 0
        return self._data[start - off : stop - off]

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._data[:, start - self._block.start : stop - self._block.start]

    def tile(self, name: str, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        return self._data[rows[0] : rows[1], cols[0] - self._block.start : cols[1] - self._block.start]

    def full(self, name: str) -> torch.Tensor:
        raise NotImplementedError("a held block serves rows, columns and tiles only")


class _SharedBaseReaders(BlockReaders):
    """The single-pair engine's readers with side 0 (the base) replaced by the held block."""

    def hold(self, held: _HeldBlock) -> None:
        self._open[0] = held

    def release(self) -> None:
        r = self._open[1]
        if r is not None and r.releases_pages:
            r.close()
            self._open[1] = None

    def close(self) -> None:
        r = self._open[1]
        if r is not None:
            r.close()
        self._open = [None, None]


def hold_block(reader: TensorReader, name: str, plan: PairPlan, block: Block, dtype: torch.dtype) -> _HeldBlock:
    """Read one block of a base tensor once (tile by tile for a column block over an mmap)."""
    if block.axis == 0:
        data = reader.rows(name, block.start, block.stop)
    elif reader.releases_pages:
        data = torch.empty((plan.rows, block.stop - block.start), dtype=dtype)
        for piece in plan.chunks(block):
            data[piece.start : piece.stop] = reader.tile(name, (piece.start, piece.stop), (block.start, block.stop))
            reader.close()  # unmap the pages this tile touched
    else:
        data = reader.cols(name, block.start, block.stop)[: plan.rows]
    if reader.releases_pages:
        reader.close()
    return _HeldBlock(data, block)


class _ManyEigStage(_EigStage):
    """The single-pair eigensolver stage; a float64 recomputation re-reads the job's own candidate."""

    def __init__(self, base: Checkpoint, owner: Callable[[int], Checkpoint], options: EngineOptions,
                 device: torch.device, results: queue.SimpleQueue) -> None:
        super().__init__(base, base, options, device, results)
        self._base = base
        self._owner = owner

    def _refine(self, job: _EigJob) -> torch.Tensor:
        self._ckpts = (self._base, self._owner(job.index))  # only this thread reads it
        return super()._refine(job)


def _plan_tasks(base: Checkpoint, candidates: list[Candidate], options: EngineOptions,
                budget: int) -> tuple[list[_Task], list[_Item]]:
    spectral_wanted = options.spectrum != "off"
    by_name: dict[str, list[tuple[int, int]]] = {}
    for c, cand in enumerate(candidates):
        for i, pair in enumerate(cand.pairs):
            by_name.setdefault(pair.a.name, []).append((c, i))
    order = {name: k for k, name in enumerate(base.tensors)}
    names = sorted(by_name, key=lambda n: (base.tensors[n].file, order.get(n, 0)))
    tasks: list[_Task] = []
    items: list[_Item] = []
    for name in names:
        members = by_name[name]
        groups: dict[PairPlan, _Task] = {}
        for c, i in members:
            pair = candidates[c].pairs[i]
            rows = pair.rows if pair.rows is not None else (pair.a.shape[0] if pair.a.shape else 1)
            cols = max(1, pair.a.numel // max(1, rows)) if pair.a.shape else 1
            # every member's Gram is alive while the block is shared: the blocks get what is left
            extra = (len(members) - 1) * gram_reserve(rows, cols) if spectral_wanted else 0
            plan = plan_pair(pair, max(budget - extra, int(budget * MIN_BLOCK_SHARE)), spectral_wanted)
            task = groups.get(plan)
            if task is None:
                task = groups[plan] = _Task(name, plan)
                tasks.append(task)
            item = _Item(len(items), c, i)
            items.append(item)
            task.members.append(item)
    return tasks, items


def candidates_per_pass(candidates: list[Candidate], options: EngineOptions) -> int:
    """How many candidates one pass carries: their spectrum accumulators of one tensor are alive together,
    so as many as the memory budget holds of the largest (a float64 Gram of the short side, or a sketch);
    at least two, so that a budget smaller than one Gram (a 7B model's 4096-wide matrices) still shares."""
    if options.spectrum == "off":
        return max(1, len(candidates))
    widest = max((min(p.rows or p.a.shape[0], p.a.numel // max(1, p.a.shape[0]))
                  for c in candidates for p in c.pairs if len(p.a.shape) >= 2), default=1)
    per = 8 * widest * (widest if options.spectrum == "exact" else 2 * options.top_k + SKETCH_OVERSAMPLE)
    return max(2, options.memory_budget // max(1, per))


def run_many(
    base: Checkpoint,
    candidates: list[Candidate],
    options: EngineOptions,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    on_base_read: BaseReadFn | None = None,
) -> ManyRun:
    """ModuleDeltas of every candidate against the base: one pass over the base per `candidates_per_pass`
    candidates (one pass for all, unless so many that their Grams would not fit the memory budget)."""
    per_pass = candidates_per_pass(candidates, options)
    if len(candidates) <= per_pass:
        return _one_pass(base, candidates, options, progress, cancel, on_base_read)
    t0 = time.perf_counter()
    total = sum(len(c.pairs) for c in candidates)
    runs = []
    for i in range(0, len(candidates), per_pass):
        group = candidates[i : i + per_pass]
        before = sum(len(c.pairs) for c in candidates[:i])
        runs.append(_one_pass(base, group, options, _offset(progress, before, total), cancel, on_base_read))
    return ManyRun([r for run in runs for r in run.results], sum(r.base_bytes_read for r in runs),
                   sum(r.base_reads for r in runs), sum(r.refined for r in runs), time.perf_counter() - t0)


def _offset(progress: ProgressFn | None, before: int, total: int) -> ProgressFn | None:
    """One pass's progress counted over every pass's tensors (in tensors: the passes' bytes are their own)."""
    if progress is None:
        return None
    sink = progress
    return lambda p: sink(Progress(before + p.done, total, p.name, 0, 0, p.message))


def _one_pass(base: Checkpoint, candidates: list[Candidate], options: EngineOptions, progress: ProgressFn | None,
              cancel: threading.Event | None, on_base_read: BaseReadFn | None) -> ManyRun:
    t_start = time.perf_counter()
    torch.set_num_threads(available_cores())
    device = pick_device(options.device)
    spectral_wanted = options.spectrum != "off"
    # As in the single-pair engine: exact spectra keep one reader (the cores go to products and solves);
    # without them the per-entry statistics are the cost, one reader lane per core, taking base tensors in turn.
    lanes = 1 if options.spectrum == "exact" else max(1, min(available_cores(), MAX_READERS))
    tasks, items = _plan_tasks(base, candidates, options, options.memory_budget // lanes)
    plan_of = {m.serial: t.plan for t in tasks for m in t.members}
    share = {m.serial: len(t.members) for t in tasks for m in t.members}
    pair_of: Callable[[_Item], TensorPair] = lambda m: candidates[m.candidate].pairs[m.index]  # noqa: E731
    bytes_total = sum(base.tensors[t.name].nbytes for t in tasks) + sum(pair_of(m).b.nbytes for m in items)
    failed: dict[int, str] = {}
    cand_bytes = [0] * len(candidates)
    counters = {"base_reads": 0, "base_bytes": 0}
    ready: queue.Queue = queue.Queue(maxsize=(PREFETCH_DEPTH + 1) * lanes)
    next_task = iter(tasks)
    lock = threading.Lock()
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    done_marker = object()

    put = partial(put_until_stopped, ready, stop)

    def produce() -> None:
        torch.set_num_threads(HELPER_THREADS)
        base_reader = base.open()
        readers = {c: _SharedBaseReaders(base, cand.checkpoint) for c, cand in enumerate(candidates)}
        try:
            while True:
                with lock:
                    task = next(next_task, None)
                if task is None:
                    break
                live = [m for m in task.members if m.candidate not in failed]
                if not live:
                    continue
                accs = {m.serial: DeltaAccumulator() for m in live}
                ref = base.tensors[task.name]
                with lock:
                    counters["base_reads"] += 1
                    counters["base_bytes"] += ref.nbytes
                    if on_base_read is not None:
                        on_base_read(task.name)
                for n, block in enumerate(task.plan.blocks):
                    held = hold_block(base_reader, task.name, task.plan, block, getattr(torch, ref.dtype))
                    last = n == len(task.plan.blocks) - 1
                    for m in live:
                        if m.candidate in failed or stop.is_set():
                            continue
                        r = readers[m.candidate]
                        r.hold(held)
                        try:
                            d = read_delta_block(r, pair_of(m), task.plan, block, accs[m.serial])
                        except ModelDeltaError as exc:
                            failed[m.candidate] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                            r.close()
                            if not put(("failed", m.candidate)):
                                return
                            continue
                        r.release()
                        if last:
                            with lock:
                                cand_bytes[m.candidate] += pair_of(m).b.nbytes
                        if not put((m.serial, d, accs[m.serial] if last else None)):
                            return
                    del held
            put(done_marker)
        except BaseException as exc:  # hand the error to the calling thread
            put(exc)
        finally:
            base_reader.close()
            for r in readers.values():
                r.close()

    eig = _ManyEigStage(base, lambda serial: candidates[items[serial].candidate].checkpoint, options, device, results)
    threads = [threading.Thread(target=produce, name=f"modeldelta-many-reader-{k}", daemon=True)
               for k in range(lanes)]
    for t in threads:
        t.start()
    lanes_done = 0
    modules: dict[int, ModuleDelta] = {}
    pending = 0  # results still expected (submitted to the eigensolver or queued)
    finished = 0
    bytes_done = 0.0

    def collect(block: bool) -> None:
        nonlocal pending, finished, bytes_done
        while pending:
            got = next_result(results, block)
            if got is None:
                return
            serial, module = cast(tuple[int, ModuleDelta], got)
            pending -= 1
            modules[serial] = module
            finished += 1
            pair = pair_of(items[serial])
            bytes_done += pair.b.nbytes + base.tensors[pair.a.name].nbytes / share[serial]
            if progress is not None:
                progress(Progress(finished, len(items), f"{candidates[items[serial].candidate].checkpoint.spec}: "
                                  f"{module.name}", int(bytes_done), bytes_total))
            if block:
                return

    active: dict[int, tuple[GramAccumulator | None, FastSpectrum | None]] = {}
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise ModelDeltaError("comparison cancelled")
            collect(block=False)
            try:
                got = ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if got is done_marker:
                lanes_done += 1
                if lanes_done == lanes:
                    break
                continue
            if isinstance(got, BaseException):
                raise got
            if got[0] == "failed":  # drop the failed candidate's accumulators
                for serial in [s for s in active if items[s].candidate == got[1]]:
                    del active[serial]
                continue
            serial, d, acc = got
            if serial not in active:
                active[serial] = spectrum_accumulator(plan_of[serial], spectral_wanted, options, device)
            gram, fast = active[serial]
            if gram is not None:
                gram.add(d)
            elif fast is not None:
                fast.add(d)
            del d
            if acc is None:
                continue
            del active[serial]
            pair, plan = pair_of(items[serial]), plan_of[serial]
            pending += 1
            if gram is not None and not acc.identical:
                eig.submit(_EigJob(serial, pair, plan, acc, gram), cancel)
                continue
            stats = fast.finish(acc.sum_d2) if fast is not None and not acc.identical else None
            results.put((serial, build_module(pair, acc, plan.spectral and spectral_wanted, stats, options)))
        while pending:
            if cancel is not None and cancel.is_set():
                raise ModelDeltaError("comparison cancelled")
            collect(block=True)
    finally:
        stop.set()
        eig.close()
        join_lanes(ready, threads)
    out: list[CandidateResult] = []
    for c, cand in enumerate(candidates):
        if c in failed:
            out.append(CandidateResult(None, failed[c], cand_bytes[c]))
            continue
        mods = {items[s].index: mod for s, mod in modules.items() if items[s].candidate == c}
        out.append(CandidateResult([mods[i] for i in range(len(cand.pairs))], None, cand_bytes[c]))
    return ManyRun(out, counters["base_bytes"], counters["base_reads"], eig.refined, time.perf_counter() - t_start)
