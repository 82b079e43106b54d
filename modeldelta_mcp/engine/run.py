"""Stream every tensor pair through the accumulators, with a reader thread one block ahead."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.accumulate import DeltaAccumulator
from modeldelta_mcp.engine.plan import Block, plan_pair
from modeldelta_mcp.engine.spectrum import GramAccumulator, summarize
from modeldelta_mcp.models import ModuleDelta, SpectrumMode
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader

# Default working-set budget for one block; large tensors are cut into blocks of this size.
DEFAULT_MEMORY_BUDGET = 256 * 1024**2
# Blocks read ahead of the one being computed: one in flight overlaps I/O with compute.
PREFETCH_DEPTH = 2

ProgressFn = Callable[[int, int, str, int, int], None]  # done, total, name, bytes_done, bytes_total


@dataclass(frozen=True)
class EngineOptions:
    top_k: int = 20
    spectrum: SpectrumMode = "exact"
    device: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from modeldelta_mcp.errors import ModelDeltaError

        raise ModelDeltaError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _read_block(reader: TensorReader, name: str, block: Block) -> torch.Tensor:
    if block.axis == 1:
        return reader.cols(name, block.start, block.stop)
    return reader.rows(name, block.start, block.stop)


class _Cancelled(Exception):
    pass


def run_engine(
    a: Checkpoint,
    b: Checkpoint,
    pairs: list[TensorPair],
    options: EngineOptions,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[ModuleDelta], int]:
    """Compute a ModuleDelta for every pair; return them and the bytes read."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    device = pick_device(options.device)
    plans = [plan_pair(p, options.memory_budget) for p in pairs]
    total_bytes = sum(p.nbytes for p in pairs)
    q: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH)
    stop = threading.Event()

    def produce() -> None:
        ra, rb = a.open(), b.open()
        try:
            for i, (pair, plan) in enumerate(zip(pairs, plans)):
                for block in plan.blocks:
                    if stop.is_set():
                        return
                    item = (i, _read_block(ra, pair.a.name, block), _read_block(rb, pair.b.name, block))
                    q.put(item)
            q.put(None)
        except BaseException as exc:  # hand the error to the consumer thread
            q.put(exc)
        finally:
            ra.close()
            rb.close()

    reader = threading.Thread(target=produce, name="modeldelta-prefetch", daemon=True)
    reader.start()
    results: list[ModuleDelta] = []
    bytes_done = 0
    try:
        for i, (pair, plan) in enumerate(zip(pairs, plans)):
            acc = DeltaAccumulator()
            gram = (
                GramAccumulator(plan.gram_size, plan.gram_of_rows, device)
                if plan.spectral and options.spectrum != "off"
                else None
            )
            fast = None
            if gram is not None and options.spectrum == "fast":
                from modeldelta_mcp.engine.fast_spectrum import FastSpectrum

                fast = FastSpectrum.maybe(plan, options.top_k, device)
                if fast is not None:
                    gram = None
            for _ in plan.blocks:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                idx, ta, tb = item
                assert idx == i
                d = acc.add(ta, tb)
                if gram is not None:
                    gram.add(d)
                elif fast is not None:
                    fast.add(d)
                del ta, tb, d
            stats = None
            if gram is not None and not acc.identical:
                stats = summarize(gram.singular_values(), options.top_k)
            elif fast is not None and not acc.identical:
                stats = fast.finish()
            results.append(_module(pair, acc, plan.spectral and options.spectrum != "off", stats, options))
            bytes_done += pair.nbytes
            if progress is not None:
                progress(i + 1, len(pairs), pair.name, bytes_done, total_bytes)
    except _Cancelled:
        from modeldelta_mcp.errors import ModelDeltaError

        raise ModelDeltaError("comparison cancelled") from None
    finally:
        stop.set()
        while reader.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()
    return results, bytes_done


def _module(pair: TensorPair, acc: DeltaAccumulator, spectral: bool, stats, options: EngineOptions) -> ModuleDelta:
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
