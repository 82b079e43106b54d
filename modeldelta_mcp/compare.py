"""The pipeline: sources -> align -> engine -> diagnosis -> ComparisonReport."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldelta_mcp import __version__
from modeldelta_mcp.align import Alignment, align
from modeldelta_mcp.diagnosis import diagnose
from modeldelta_mcp.diagnosis.diagnose import seed_set
from modeldelta_mcp.diagnosis.fingerprints.claim import base_claim
from modeldelta_mcp.engine import EngineOptions, run_engine
from modeldelta_mcp.engine.permutation import undo_permutations
from modeldelta_mcp.engine.run import pick_device
from modeldelta_mcp.facts import PermutationFacts
from modeldelta_mcp.lineage import claim_of
from modeldelta_mcp.models import (
    BaseInference,
    CheckpointInfo,
    Checkpoints,
    ComparisonReport,
    EngineInfo,
    FilterInfo,
    LayerRoleMetrics,
    LayerRow,
    ModuleDelta,
    QuantGroup,
    Totals,
)
from modeldelta_mcp.progress import ProgressFn
from modeldelta_mcp.select import NO_FILTER, TensorFilter
from modeldelta_mcp.sources import Checkpoint, resolve
from modeldelta_mcp.sources.remote import REMOTE_FORMAT, fetched_bytes
from modeldelta_mcp.sources.spec import ModelSpec
from modeldelta_mcp.store import PairIdentity

if TYPE_CHECKING:
    from modeldelta_mcp.selection.executors import Executor


@dataclass(frozen=True)
class ResolvedPair:
    a: Checkpoint
    b: Checkpoint
    selection: TensorFilter = NO_FILTER
    base_inferred: BaseInference | None = field(default=None, compare=False)

    def identity(self) -> PairIdentity:
        return PairIdentity(self.a.identity(), self.b.identity(), self.selection.key())

    def key(self, options: EngineOptions) -> str:
        return self.identity().key(asdict(options))

    def report_id(self, options: EngineOptions) -> str:
        return self.identity().report_id(asdict(options))


def resolve_pair(model_a: ModelSpec | str | None, model_b: ModelSpec | str, token: str | None = None,
                 quiet: bool = True, selection: TensorFilter = NO_FILTER, download: bool = False) -> ResolvedPair:
    """`model_a` None: the base is inferred from B's card or adapter config (lineage.py)."""
    base_inferred = None
    if model_a is None:
        from modeldelta_mcp.lineage import infer_base

        base_inferred = infer_base(model_b, token=token)
        model_a = base_inferred.model_a
    subset = selection.active
    a = resolve(model_a, token=token, quiet=quiet, subset=subset, download=download)
    b = resolve(model_b, token=token, quiet=quiet, base=a, subset=subset, download=download)
    from modeldelta_mcp.sources.quantized.formats import shapes_from_other_side

    if shapes_from_other_side(a):  # quanto A without the shapes of its grouped weights: B's tell them
        a = resolve(model_a, token=token, quiet=quiet, base=b, subset=subset, download=download)
    return ResolvedPair(a, b, selection, base_inferred)


def quant_groups(c: Checkpoint) -> list[QuantGroup]:
    """The quantization schemes a checkpoint declares, per group of tensors (from its index alone)."""
    from modeldelta_mcp.architecture import default_table
    from modeldelta_mcp.sources.quantized.formats import DeclaresQuantization

    if not isinstance(c.format, DeclaresQuantization):
        return []
    table = default_table()
    out = []
    for label, (scheme, refs) in c.format.schemes().items():
        roles: dict[str, int] = {}
        for r in refs:
            role = table.role(r.name)
            roles[role] = roles.get(role, 0) + 1
        out.append(QuantGroup(label=label, format=scheme.format, declared_scheme=scheme.declared,
                              number_format=scheme.number_format, bits=scheme.bits, group_size=scheme.group_size,
                              granularity=scheme.granularity, act_order=scheme.act_order, n_tensors=len(refs),
                              n_params=sum(r.numel for r in refs), roles=dict(sorted(roles.items()))))
    return out


def checkpoint_info(c: Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(source=c.source, id=c.spec, revision=c.revision, files=list(c.files),
                          n_tensors=len(c.tensors), n_params=c.n_params, dtypes=c.dtypes(),
                          architecture=c.architecture, format=c.fmt, quantization=quant_groups(c),
                          streamed=c.fmt == REMOTE_FORMAT)


def totals(mods: list[ModuleDelta]) -> Totals:
    seed = seed_set(mods)
    n = max(1, len(seed))
    ranks = [m.effective_rank for m in seed if m.has_svd and m.effective_rank]
    return Totals(
        total_delta_norm=math.sqrt(sum(m.frob_norm**2 for m in seed)),
        mean_relative_change=sum(m.frob_norm_relative for m in seed) / n,
        mean_cosine_sim=sum(min(1.0, m.cosine_sim) for m in seed) / n,
        mean_effective_rank=(sum(ranks) / len(ranks)) if ranks else None,
        n_identical=sum(1 for m in mods if m.identical),
        n_changed=sum(1 for m in mods if not m.identical),
    )


def layer_rows(mods: list[ModuleDelta]) -> list[LayerRow]:
    """Per layer, per role: metrics of the role's weight tensors (averaged when a role repeats)."""
    cells: dict[int, dict[str, list[ModuleDelta]]] = {}
    for m in mods:
        if m.layer is None or not m.name.endswith("weight"):
            continue
        cells.setdefault(m.layer, {}).setdefault(m.role, []).append(m)
    rows = []
    for layer in sorted(cells):
        roles = {}
        for role, ms in sorted(cells[layer].items()):
            ers = [m.effective_rank for m in ms if m.effective_rank is not None]
            cs = [m.concentration_top_k for m in ms if m.concentration_top_k is not None]
            roles[role] = LayerRoleMetrics(
                frob_norm_relative=sum(m.frob_norm_relative for m in ms) / len(ms),
                cosine_sim=sum(m.cosine_sim for m in ms) / len(ms),
                effective_rank=sum(ers) / len(ers) if ers else None,
                concentration_top_k=sum(cs) / len(cs) if cs else None,
            )
        rows.append(LayerRow(layer=layer, roles=roles))
    return rows


def model_info(c: Checkpoint) -> dict:
    cfg = c.config or {}
    keys = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "intermediate_size", "vocab_size", "torch_dtype", "tie_word_embeddings",
            "_name_or_path")
    return {k: cfg[k] for k in keys if k in cfg}


def compare(
    pair: ResolvedPair,
    options: EngineOptions,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    journal_root: Path | None = None,
    keep_journal: bool = False,
    executor: Executor | None = None,
) -> ComparisonReport:
    """`journal_root` (the store root): per-tensor results are journaled there, and a comparison
    interrupted earlier resumes from them (store/journal.py). `keep_journal`: the caller removes the journal
    once it has stored the report (ResultStore.finished), so a process killed while storing still resumes.
    `executor`: where the per-tensor work runs (selection/executors.py); a Ray run is not journaled (its
    tasks are the unit of retry)."""
    t0 = time.perf_counter()
    alignment = align(pair.a, pair.b, selection=pair.selection)
    if executor is not None and executor.name != "local":
        spread = executor.run_pair(pair.a, pair.b, alignment.pairs, options, progress=progress, cancel=cancel)
        split = {"executor": spread.split.executor, "workers": spread.split.workers, "tasks": spread.split.tasks,
                 "retries": spread.split.retries}
        return build_report(pair, alignment, spread.modules, options, time.perf_counter() - t0, spread.bytes_read,
                            split)
    fetched_before = _fetched(pair)
    journal = None
    done: dict = {}
    if journal_root is not None:
        from modeldelta_mcp.store.journal import Journal

        journal = Journal.for_key(journal_root, pair.key(options), [p.name for p in alignment.pairs])
        done = journal.load()
        journal.open(done)
    try:
        run = run_engine(pair.a, pair.b, alignment.pairs, options, progress=progress, cancel=cancel, done=done,
                         on_result=journal.record if journal is not None else None)
    finally:
        if journal is not None:
            journal.close()
    mods = run.modules
    # hidden units of B in another order than A's: re-measure those tensors aligned (only flagged layers are read)
    undone = undo_permutations(pair.a, pair.b, alignment.pairs, mods, options) if pair.b.adapter is None else None
    if undone is not None:
        mods = undone.modules
    bytes_read = _bytes_read(pair, alignment.pairs, done, run.bytes_read, _fetched(pair) - fetched_before)
    report = build_report(pair, alignment, mods, options, time.perf_counter() - t0, bytes_read,
                          permutation=undone.facts if undone is not None else None)
    if journal is not None and not keep_journal:
        journal.discard()
    return report


def build_report(pair: ResolvedPair, alignment: Alignment, mods: list[ModuleDelta], options: EngineOptions,
                 seconds: float, bytes_read: int, engine: dict[str, Any] | None = None,
                 permutation: PermutationFacts | None = None) -> ComparisonReport:
    """The report of a pair from the engine's modules (`engine`: how the work was split, EngineInfo fields;
    `permutation`: hidden units undone before `mods` were measured)."""
    checkpoints = Checkpoints(a=checkpoint_info(pair.a), b=checkpoint_info(pair.b))
    diagnostics = diagnose(mods, pair.a.spec, pair.b.spec, adapter=pair.b.adapter,
                           quantization=checkpoints.a.quantization + checkpoints.b.quantization,
                           permutation=permutation)
    claim = base_claim(claim_of(pair.b), pair.a.spec, mods, diagnostics.findings)
    if claim is not None:
        diagnostics.findings.append(claim)
    return ComparisonReport(
        report_id=pair.report_id(options),
        model_a=pair.a.spec,
        model_b=pair.b.spec,
        checkpoints=checkpoints,
        n_tensors=len(mods),
        n_skipped=len(alignment.skipped),
        skipped=alignment.skipped,
        totals=totals(mods),
        modules=mods,
        layers=layer_rows(mods),
        diagnostics=diagnostics,
        engine=EngineInfo(version=__version__, spectrum=options.spectrum, top_k=options.top_k,
                          device=str(pick_device(options.device)), seconds=seconds, bytes_read=bytes_read,
                          **(engine or {})),
        model_info={"model_a": model_info(pair.a), "model_b": model_info(pair.b)},
        filters=_filter_info(pair.selection, alignment.n_filtered),
        base_inferred=pair.base_inferred,
    )


def _filter_info(selection: TensorFilter, n_filtered: int) -> FilterInfo | None:
    if not selection.active:
        return None
    return FilterInfo(include=list(selection.include), exclude=list(selection.exclude), layers=selection.layers,
                      n_filtered=n_filtered)


def _fetched(pair: ResolvedPair) -> int:
    return fetched_bytes(pair.a) + fetched_bytes(pair.b)


def _bytes_read(pair: ResolvedPair, pairs: list, done: dict, engine_bytes: int, fetched: int) -> int:
    """The engine counts stored bytes per tensor read; a streamed side counts what it fetched instead."""
    todo = [p for i, p in enumerate(pairs) if i not in done]
    remote_a, remote_b = pair.a.fmt == REMOTE_FORMAT, pair.b.fmt == REMOTE_FORMAT
    stored = sum(p.a.nbytes for p in todo) * remote_a + sum(p.b.nbytes for p in todo) * remote_b
    return engine_bytes - stored + fetched
