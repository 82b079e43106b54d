"""The many-candidate pass (engine/many.py) on MiniLM and four real derived candidates: each base tensor is
read once, and every candidate's modules are those of its own single-pair run."""

from __future__ import annotations

import threading
from dataclasses import fields

import pytest
import torch
from _many_faults import FailingCheckpoint, failing
from _many_models import Family

from modeldelta_mcp.align import align
from modeldelta_mcp.engine import EngineOptions, run_engine
from modeldelta_mcp.engine.many import Candidate, run_many
from modeldelta_mcp.models import ModuleDelta
from modeldelta_mcp.sources import Checkpoint, TensorReader, resolve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

METRICS = ("frob_norm", "frob_norm_relative", "cosine_sim", "sparsity", "effective_rank", "stable_rank",
           "concentration_top_k", "spectral_alpha")
REL_TOL = 1e-6


class _Counting(TensorReader):
    """Counts the entries read per tensor, and by which engine thread (pass reader or eigensolver)."""

    def __init__(self, inner: TensorReader, counts: dict[tuple[str, str], int], lock: threading.Lock) -> None:
        self._inner, self._counts, self._lock = inner, counts, lock
        self.releases_pages = inner.releases_pages  # type: ignore[misc]

    def _note(self, name: str, t: torch.Tensor) -> torch.Tensor:
        key = (name, threading.current_thread().name)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + t.numel()
        return t

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._note(name, self._inner.rows(name, start, stop))

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._note(name, self._inner.cols(name, start, stop))

    def tile(self, name: str, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        return self._note(name, self._inner.tile(name, rows, cols))

    def full(self, name: str) -> torch.Tensor:
        return self._note(name, self._inner.full(name))

    def close(self) -> None:
        self._inner.close()


class _CountingCheckpoint(Checkpoint):
    counts: dict[tuple[str, str], int]

    def open(self) -> TensorReader:
        return _Counting(super().open(), self.counts, self.lock)


def counting(ckpt: Checkpoint) -> _CountingCheckpoint:
    out = _CountingCheckpoint(**{f.name: getattr(ckpt, f.name) for f in fields(ckpt)})
    out.counts, out.lock = {}, threading.Lock()  # type: ignore[attr-defined]
    return out


def assert_same_modules(single: list[ModuleDelta], many: list[ModuleDelta]) -> None:
    assert [m.name for m in single] == [m.name for m in many]
    for s, m in zip(single, many, strict=True):
        for key in METRICS:
            x, y = getattr(s, key), getattr(m, key)
            if x is None or y is None:
                assert x is None and y is None, (s.name, key)
                continue
            assert abs(x - y) <= REL_TOL * max(abs(x), 1e-12), (s.name, key, x, y)
        if s.top_singular_values is None:
            assert m.top_singular_values is None
        else:
            assert s.top_singular_values == pytest.approx(m.top_singular_values, rel=REL_TOL, abs=1e-12)
        assert s.forensics.model_dump(exclude_none=True).keys() == m.forensics.model_dump(exclude_none=True).keys()


def test_many_pass_reads_each_base_tensor_once_and_matches_single_runs(minilm_family: Family) -> None:
    base = counting(resolve(str(minilm_family.base)))
    cands = [resolve(str(p)) for p in minilm_family.candidates.values()]
    pairs = [align(base, c).pairs for c in cands]
    options = EngineOptions()
    reported: list[str] = []
    run = run_many(base, [Candidate(c, p) for c, p in zip(cands, pairs, strict=True)], options,
                   on_base_read=reported.append)

    # every base tensor any candidate pairs was read exactly once by the pass (entries counted at the reader)
    paired = {p.a.name for ps in pairs for p in ps}
    by_pass = {name: n for (name, thread), n in base.counts.items() if thread.startswith("modeldelta-many-reader")}
    assert set(by_pass) == paired
    for name in paired:
        assert by_pass[name] == base.tensors[name].numel, f"{name}: {by_pass[name]} entries read"
    assert sorted(reported) == sorted(paired) and run.base_reads == len(paired)
    # the only other base reads are float64 recomputations (a near rank-deficient float32 Gram), one each
    refined = {name: n for (name, thread), n in base.counts.items() if thread == "modeldelta-eig"}
    assert sum(n // base.tensors[name].numel for name, n in refined.items()) == run.refined

    for cand, ps, result in zip(cands, pairs, run.results, strict=True):
        assert result.error is None
        single = run_engine(base, cand, ps, options).modules
        assert result.modules is not None
        assert_same_modules(single, result.modules)


def test_many_pass_keeps_going_when_one_candidate_fails(minilm_family: Family) -> None:
    base = resolve(str(minilm_family.base))
    good = resolve(str(minilm_family.fp16))
    bad = failing(resolve(str(minilm_family.finetune)))
    run = run_many(base, [Candidate(bad, align(base, bad).pairs), Candidate(good, align(base, good).pairs)],
                   EngineOptions(spectrum="off"))
    assert run.results[0].modules is None
    assert run.results[0].error == f"{FailingCheckpoint.bad_tensor}: unreadable (test)"
    assert run.results[1].error is None and run.results[1].modules is not None
    single = run_engine(base, good, align(base, good).pairs, EngineOptions(spectrum="off")).modules
    assert_same_modules(single, run.results[1].modules)


def test_candidates_beyond_the_memory_budget_go_in_several_passes(minilm_family: Family,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldelta_mcp.engine import many

    base = resolve(str(minilm_family.base))
    cands = [resolve(str(p)) for p in (minilm_family.fp16, minilm_family.pruned, minilm_family.finetune)]
    work = [Candidate(c, align(base, c).pairs) for c in cands]
    # the widest matrix's float64 Gram (384 x 384) is 1.18 MB: a 2.5 MB budget carries two candidates a pass
    assert many.candidates_per_pass(work, EngineOptions(memory_budget=int(2.5 * 1024**2))) == 2
    assert many.candidates_per_pass(work, EngineOptions()) == EngineOptions().memory_budget // (8 * 384 * 384)
    assert many.candidates_per_pass(work, EngineOptions(spectrum="off", memory_budget=1)) == 3
    options = EngineOptions(spectrum="off")
    one = run_many(base, work, options)
    monkeypatch.setattr(many, "candidates_per_pass", lambda c, o: 2)
    two = run_many(base, work, options)
    assert two.base_reads == 2 * one.base_reads
    for a, b in zip(one.results, two.results, strict=True):
        assert a.modules is not None and b.modules is not None
        assert_same_modules(a.modules, b.modules)
    seen: list = []
    run_many(base, work, options, progress=seen.append)
    assert [p.done for p in seen] == list(range(1, len(seen) + 1)) and {p.total for p in seen} == {len(seen)}
