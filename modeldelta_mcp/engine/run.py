"""Stream every tensor pair through the engine in three overlapped stages.

- reader thread (one per core, taking tensors in turn, when no exact spectrum is computed):
  reads CHUNK_ENTRIES pieces of A and B, upcasts them and feeds DeltaAccumulator
  (norms, cosine, sparsity, forensic counts) while assembling float32 delta blocks; safetensors
  handles are closed after every block, so the file pages a block touched are unmapped and stop
  counting toward resident memory (an open mmap keeps every touched page resident).
- calling thread: Gram products (or the fast sketch) block by block; it alone calls the progress
  and result callbacks and watches the cancel event.
- eigensolver thread: eigenvalues of finished Grams (same sizes batched), the float64 recomputation
  when float32 rounding could move the metrics (spectrum.Spectrum.resolved), and the ModuleDelta.
The eigensolves of one tensor overlap the products of the next; torch threads are set to the cores.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.accumulate import DeltaAccumulator
from modeldelta_mcp.engine.fast_spectrum import FastSpectrum
from modeldelta_mcp.engine.plan import PREFETCH_DEPTH, Block, PairPlan, plan_pair
from modeldelta_mcp.engine.spectrum import GramAccumulator, SpectrumStats, eigvals_batch, spectrum_from_eigs, summarize
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ModuleDelta, SpectrumMode
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader

# Default working set of the engine (blocks in flight + Gram matrices), see plan.py. With the ~250 MB of
# an imported torch and the allocator's slack, a whole run peaks near 610 MB (0.5B pair: 595-597 thousand KiB
# against 637-680 thousand at 384 MiB, in the same time: larger blocks bought no speed; docs/benchmarks.md).
DEFAULT_MEMORY_BUDGET = 288 * 1024**2
# Small Grams (attention k/v) queue up to this many bytes and are solved as one batch; a larger Gram
# waits until the eigensolver is free, so at most one is solved while the next is accumulated.
EIG_BATCH_BYTES = 8 * 1024**2
# Torch threads of the helper stages: each is one lane; the calling thread's products use every core.
# One thread also keeps the reader's many small elementwise ops off OpenMP barriers, which stall for a
# scheduler time slice when the machine is busy.
HELPER_THREADS = 1
# Reader threads at most (spectrum fast/off only; exact keeps one, the cores go to products and solves).
MAX_READERS = 2

ResultFn = Callable[[int, ModuleDelta], None]  # index in `pairs`, its result (e.g. a resume journal)


@dataclass(frozen=True)
class EngineOptions:
    top_k: int = 20
    spectrum: SpectrumMode = "exact"
    device: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET


@dataclass(frozen=True)
class StageSeconds:
    """Busy seconds per stage of one run: where the time went (benchmarks, docs/engine.md); never in a report."""

    reader: float  # reading, upcasting and per-entry statistics, summed over reader lanes
    gram: float  # Gram products or fast sketches (calling thread)
    eig: float  # eigensolves, float64 recomputations and ModuleDelta assembly
    wait_eig: float  # the calling thread waiting for the eigensolver to take a Gram


@dataclass(frozen=True)
class EngineRun:
    """What one run_engine call produced."""

    modules: list[ModuleDelta]  # one per pair, in the order of `pairs`
    bytes_read: int  # tensor bytes read by this run (pairs known from a journal are not read)
    stages: StageSeconds
    refined: int  # tensors whose spectrum was recomputed from a float64 Gram


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelDeltaError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ModelDeltaError(f"--device {name}: unknown device, use auto, cpu or cuda")
    return torch.device(name)


# Cores the engine may use, when fewer than the process may run on: a Ray task sets it to its CPU share,
# so that tasks sharing a node do not oversubscribe it.
THREADS_ENV = "MODELDELTA_THREADS"


def available_cores() -> int:
    allotted = os.environ.get(THREADS_ENV, "")
    if allotted.isdigit() and int(allotted) > 0:
        return int(allotted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class BlockReaders:
    """Readers of A and B opened on demand; release() unmaps what the last block touched."""

    def __init__(self, a: Checkpoint, b: Checkpoint) -> None:
        self._ckpts = (a, b)
        self._open: list[TensorReader | None] = [None, None]

    def get(self, side: int) -> TensorReader:
        r = self._open[side]
        if r is None:
            r = self._ckpts[side].open()
            self._open[side] = r
        return r

    def release(self) -> None:
        for side in range(2):
            r = self._open[side]
            if r is not None and r.releases_pages:
                r.close()
                self._open[side] = None

    def close(self) -> None:
        for r in self._open:
            if r is not None:
                r.close()
        self._open = [None, None]


def _read(reader: TensorReader, name: str, piece: Block) -> torch.Tensor:
    if piece.axis == 1:
        return reader.cols(name, piece.start, piece.stop)
    return reader.rows(name, piece.start, piece.stop)


def plain_delta(ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    """B − A in float32 with NaN/Inf entries (of A, B or an overflowed B − A) zeroed, as DeltaAccumulator.add
    returns it."""
    a, b = ta.float(), tb.float()
    d = b - a
    bad = ~torch.isfinite(d)  # a NaN/Inf in A or B makes the difference NaN/Inf too
    if bool(bad.any()):
        d[bad] = 0.0
    return d


def read_delta_block(readers: BlockReaders, pair: TensorPair, plan: PairPlan, block: Block,
                     acc: DeltaAccumulator | None) -> torch.Tensor:
    """The float32 delta of one block, read and upcast chunk by chunk (statistics into `acc` if given)."""
    ra, rb = readers.get(0), readers.get(1)
    pieces = plan.chunks(block)
    if block.axis == 1:
        return _read_column_block(readers, pair, plan, block, acc, pieces)
    out: torch.Tensor | None = None
    for piece in pieces:
        d = _delta(acc, _read(ra, pair.a.name, piece), _read(rb, pair.b.name, piece), True)
        d = d.reshape(piece.stop - piece.start, -1)
        if len(pieces) == 1:
            return d
        if out is None:
            out = torch.empty((block.stop - block.start, d.shape[1]), dtype=torch.float32)
        out[piece.start - block.start : piece.stop - block.start] = d
    assert out is not None
    return out


def _read_column_block(readers: BlockReaders, pair: TensorPair, plan: PairPlan, block: Block,
                       acc: DeltaAccumulator | None, pieces: list[Block]) -> torch.Tensor:
    """A column block, read in row tiles and unmapped after each (see SafetensorsReader.tile)."""
    cols = (block.start, block.stop)
    out = torch.empty((plan.rows, block.stop - block.start), dtype=torch.float32)
    whole: tuple[torch.Tensor, torch.Tensor] | None = None
    for piece in pieces:
        ra, rb = readers.get(0), readers.get(1)
        rows = (piece.start, piece.stop)
        if ra.releases_pages and rb.releases_pages:
            ta, tb = ra.tile(pair.a.name, rows, cols), rb.tile(pair.b.name, rows, cols)
        else:  # readers holding their data in memory: read the column block once
            if whole is None:
                whole = (ra.cols(pair.a.name, *cols), rb.cols(pair.b.name, *cols))
            ta, tb = whole[0][rows[0] : rows[1]], whole[1][rows[0] : rows[1]]
        out[rows[0] : rows[1]] = _delta(acc, ta, tb, False).reshape(rows[1] - rows[0], -1)
        readers.release()
    return out


def _delta(acc: DeltaAccumulator | None, ta: torch.Tensor, tb: torch.Tensor, whole_rows: bool) -> torch.Tensor:
    return acc.add(ta, tb, whole_rows=whole_rows) if acc is not None else plain_delta(ta, tb)


@dataclass
class _EigJob:
    index: int
    pair: TensorPair
    plan: PairPlan
    acc: DeltaAccumulator
    gram: GramAccumulator

    @property
    def nbytes(self) -> int:
        return self.gram.nbytes


class _EigStage:
    """One thread that solves finished Grams and hands ModuleDeltas back through `results`."""

    def __init__(self, a: Checkpoint, b: Checkpoint, options: EngineOptions, device: torch.device,
                 results: queue.SimpleQueue) -> None:
        self._ckpts = (a, b)
        self._options = options
        self._device = device
        self._results = results
        self._cond = threading.Condition()
        self._jobs: list[_EigJob] = []
        self._in_flight = 0  # bytes of Grams queued or being solved
        self._stop = False
        self.refined = 0  # tensors recomputed in float64 (EngineRun.refined)
        self.busy = 0.0
        self._thread = threading.Thread(target=self._run, name="modeldelta-eig", daemon=True)
        self._thread.start()

    def submit(self, job: _EigJob, cancel: threading.Event | None) -> None:
        with self._cond:
            cap = max(job.nbytes, EIG_BATCH_BYTES)
            while self._in_flight and self._in_flight + job.nbytes > cap and not self._stop:
                self._cond.wait(0.1)
                if cancel is not None and cancel.is_set():
                    return
            self._jobs.append(job)
            self._in_flight += job.nbytes
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        torch.set_num_threads(HELPER_THREADS)
        while True:
            with self._cond:
                while not self._jobs and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                jobs, self._jobs = self._jobs, []
            t0 = time.perf_counter()
            try:
                self._solve(jobs)
            except BaseException as exc:  # hand the error to the calling thread
                self._results.put(exc)
            self.busy += time.perf_counter() - t0
            with self._cond:
                self._in_flight -= sum(j.nbytes for j in jobs)
                self._cond.notify_all()

    def _solve(self, jobs: list[_EigJob]) -> None:
        finished = [j.gram.finish() for j in jobs]
        evals = eigvals_batch([g for g, _ in finished])
        for job, (g, trace), ev in zip(jobs, finished, evals, strict=True):
            spec = spectrum_from_eigs(ev, trace, g.dtype)
            sigma = spec.sigma if spec.resolved else self._refine(job)
            stats = summarize(sigma, self._options.top_k)
            # forensic rank floor: the eigensolver resolves σ only down to its own rounding floor
            job.acc.note_spectrum(sigma, job.plan.rows, job.plan.cols,
                                  gram_dtype=g.dtype if spec.resolved else torch.float64)
            self._results.put((job.index, build_module(job.pair, job.acc, True, stats, self._options)))

    def _refine(self, job: _EigJob) -> torch.Tensor:
        """Recompute the Gram in float64 from a second read of the tensor (rare: near rank-deficient Δ)."""
        self.refined += 1
        plan = job.plan
        gram = GramAccumulator(plan.gram_size, plan.gram_of_rows, self._device, "float64")
        readers = BlockReaders(*self._ckpts)
        try:
            for block in plan.blocks:
                gram.add(read_delta_block(readers, job.pair, plan, block, None))
                readers.release()
        finally:
            readers.close()
        try:
            sigma = gram.singular_values()
        except torch.linalg.LinAlgError as exc:
            raise ModelDeltaError(f"tensor {job.pair.b.name}: singular values did not converge") from exc
        if not bool(torch.isfinite(sigma).all()):
            raise ModelDeltaError(f"tensor {job.pair.b.name}: singular values are not finite")
        return sigma


class _Cancelled(Exception):
    pass


# Seconds a blocked queue operation waits before looking at the stop flag or cancellation again.
POLL_S = 0.1


def put_until_stopped(ready: queue.Queue, stop: threading.Event, item: object) -> bool:
    """Put `item` on a bounded queue, giving up (False) once `stop` is set: a reader lane must not block
    forever on a queue nobody drains after the calling thread failed."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def join_lanes(ready: queue.Queue, lanes: list[threading.Thread]) -> None:
    """Wait for the reader lanes (after `stop` was set), draining their queue so none stays blocked."""
    for t in lanes:
        while t.is_alive():
            try:
                ready.get(timeout=POLL_S / 2)
            except queue.Empty:
                pass
        t.join()


def next_result(results: queue.SimpleQueue, block: bool) -> object | None:
    """The next finished result (waiting up to POLL_S when `block`), None when there is none yet; an error a
    stage handed over is raised here, in the calling thread."""
    try:
        item = results.get(timeout=POLL_S) if block else results.get_nowait()
    except queue.Empty:
        return None
    if isinstance(item, BaseException):
        raise item
    return item


def spectrum_accumulator(plan: PairPlan, spectral_wanted: bool, options: EngineOptions,
                         device: torch.device) -> tuple[GramAccumulator | None, FastSpectrum | None]:
    """A tensor's spectrum accumulator: a Gram (exact), a sketch (fast), or none."""
    if not (plan.spectral and spectral_wanted):
        return None, None
    if options.spectrum == "fast":
        fast = FastSpectrum.maybe(plan, options.top_k, device)
        if fast is not None:
            return None, fast
    return GramAccumulator(plan.gram_size, plan.gram_of_rows, device, plan.precision), None


def run_engine(
    a: Checkpoint,
    b: Checkpoint,
    pairs: list[TensorPair],
    options: EngineOptions,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    done: dict[int, ModuleDelta] | None = None,
    on_result: ResultFn | None = None,
) -> EngineRun:
    """Compute a ModuleDelta for every pair; return them with the bytes read and the stage timings.

    `done` holds results already known (a resumed run: those pairs are not read again); `on_result`
    is called in the calling thread for each new result, in completion order.
    """
    torch.set_num_threads(available_cores())
    device = pick_device(options.device)
    known: dict[int, ModuleDelta] = dict(done or {})
    todo = [i for i in range(len(pairs)) if i not in known]
    spectral_wanted = options.spectrum != "off"
    # Without exact spectra the reader's per-entry statistics are the whole cost: one reader per core,
    # taking tensors in turn, each with its share of the budget.
    lanes = 1 if options.spectrum == "exact" else max(1, min(available_cores(), MAX_READERS))
    plans = {i: plan_pair(pairs[i], options.memory_budget // lanes, spectral_wanted) for i in todo}
    total_bytes = sum(p.nbytes for p in pairs)
    bytes_done = sum(pairs[i].nbytes for i in known)
    bytes_read = 0
    # One queue for every lane: the calling thread takes blocks in whatever order they are ready, so a
    # lane busy with one large tensor (the embedding) does not hold the others up.
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH * lanes)
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    busy = {"reader": 0.0, "gram": 0.0, "wait_eig": 0.0}
    next_todo = iter(todo)  # lanes take the next tensor when free (balances unequal tensor sizes)
    take_lock = threading.Lock()

    put = partial(put_until_stopped, ready, stop)

    def produce() -> None:
        torch.set_num_threads(HELPER_THREADS)
        readers = BlockReaders(a, b)
        try:
            while True:
                with take_lock:
                    i = next(next_todo, None)
                if i is None:
                    break
                pair, plan = pairs[i], plans[i]
                acc = DeltaAccumulator()
                for n, block in enumerate(plan.blocks):
                    if stop.is_set():
                        return
                    t0 = time.perf_counter()
                    d = read_delta_block(readers, pair, plan, block, acc)
                    readers.release()
                    busy["reader"] += time.perf_counter() - t0
                    if not put((i, d, acc if n == len(plan.blocks) - 1 else None)):
                        return
        except BaseException as exc:  # hand the error to the calling thread
            put(exc)
        finally:
            readers.close()

    eig = _EigStage(a, b, options, device, results)
    readers_threads = [threading.Thread(target=produce, name=f"modeldelta-reader-{k}", daemon=True)
                       for k in range(lanes)]
    for t in readers_threads:
        t.start()
    finished = len(known)

    def collect(block: bool) -> None:
        nonlocal finished, bytes_done
        while True:
            item = next_result(results, block)
            if item is None:
                return
            idx, module = cast(tuple[int, ModuleDelta], item)
            known[idx] = module
            finished += 1
            bytes_done += pairs[idx].nbytes
            if on_result is not None:
                on_result(idx, module)
            if progress is not None:
                progress(Progress(done=finished, total=len(pairs), name=pairs[idx].name, bytes_done=bytes_done,
                                  bytes_total=total_bytes))
            if block:
                return

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise _Cancelled

    def finish(i: int, gram: GramAccumulator | None, fast: FastSpectrum | None, acc: DeltaAccumulator) -> None:
        pair, plan = pairs[i], plans[i]
        if gram is not None and not acc.identical:
            t0 = time.perf_counter()
            eig.submit(_EigJob(i, pair, plan, acc, gram), cancel)
            busy["wait_eig"] += time.perf_counter() - t0
            return
        stats: SpectrumStats | None = None
        if fast is not None and not acc.identical:
            stats = fast.finish(acc.sum_d2)
        results.put((i, build_module(pair, acc, plan.spectral and spectral_wanted, stats, options)))

    # One tensor per lane is in progress at a time, so at most `lanes` accumulators are alive.
    active: dict[int, tuple[GramAccumulator | None, FastSpectrum | None]] = {}
    try:
        streamed = 0
        while streamed < len(todo):
            check_cancel()
            collect(block=False)
            try:
                item = ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            i, d, acc = item
            if i not in active:
                active[i] = spectrum_accumulator(plans[i], spectral_wanted, options, device)
            gram, fast = active[i]
            t0 = time.perf_counter()
            if gram is not None:
                gram.add(d)
            elif fast is not None:
                fast.add(d)
            busy["gram"] += time.perf_counter() - t0
            del d
            if acc is None:
                continue
            del active[i]
            streamed += 1
            bytes_read += pairs[i].nbytes
            finish(i, gram, fast, acc)
            collect(block=False)
        while finished < len(pairs):
            check_cancel()
            collect(block=True)
    except _Cancelled:
        raise ModelDeltaError("comparison cancelled") from None
    finally:
        stop.set()
        eig.close()
        join_lanes(ready, readers_threads)
    return EngineRun(modules=[known[i] for i in range(len(pairs))], bytes_read=bytes_read,
                     stages=StageSeconds(reader=busy["reader"], gram=busy["gram"], eig=eig.busy,
                                         wait_eig=busy["wait_eig"]),
                     refined=eig.refined)


def build_module(pair: TensorPair, acc: DeltaAccumulator, spectral: bool, stats: SpectrumStats | None,
                 options: EngineOptions) -> ModuleDelta:
    fields: dict = dict(
        name=pair.name,
        role=pair.role,
        layer=pair.layer,
        shape=list(pair.b.shape),
        n_params=pair.numel,
        dtype_a=pair.a.dtype,
        dtype_b=pair.b.dtype,
        frob_norm=acc.frob,
        frob_norm_relative=acc.frob_relative,
        cosine_sim=acc.cosine,
        sparsity=acc.sparsity,
        identical=acc.identical,
        has_svd=spectral,
        in_profile=pair.in_profile,
        rows_a=pair.rows_a,
        rows_b=pair.rows_b,
        nonfinite=acc.n_nonfinite,
        forensics=acc.forensics(),
        stored_name=pair.b.stored_name if pair.name == pair.b.name else pair.a.stored_name,
        quant_a=pair.a.quant,
        quant_b=pair.b.quant,
    )
    if spectral:
        fields["spectrum"] = options.spectrum
        if stats is not None:
            fields.update(
                effective_rank=stats.effective_rank,
                stable_rank=stats.stable_rank,
                concentration_top_k=stats.concentration_top_k,
                top_k=stats.top_k,
                top_singular_values=stats.top_singular_values,
                spectral_alpha=stats.spectral_alpha,
                n_singular_values=stats.n_singular_values,
            )
        else:  # an identical pair: Δ = 0 has no spectrum to speak of
            n = min(pair.rows or pair.a.shape[0], pair.a.numel // max(1, pair.a.shape[0]))
            fields.update(effective_rank=0.0, stable_rank=0.0, concentration_top_k=0.0,
                          top_k=min(options.top_k, n), top_singular_values=[0.0] * min(options.top_k, n),
                          spectral_alpha=None, n_singular_values=n)
    return ModuleDelta(**fields)
