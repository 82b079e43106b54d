"""Resumable runs: an interrupted comparison continues from its journal and ends with the same report."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _perf_pairs import tiny_qwen_pair

from modeldelta_mcp.align import align
from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.progress import Progress
from modeldelta_mcp.store.journal import Journal, journal_path

STOP_AFTER = 7  # tensors finished before the interruption


def _stable(report) -> dict:
    """The report without what describes the run rather than the result (timing, bytes read this time)."""
    data = report.model_dump(mode="json")
    data.pop("engine")
    return data


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_qwen_pair(tmp_path_factory.mktemp("perf-journal"))


def test_interrupted_run_resumes_where_it_stopped(qwen_pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = qwen_pair
    options = EngineOptions(device="cpu")
    pair = resolve_pair(str(a), str(b))
    n_pairs = len(align(pair.a, pair.b).pairs)
    root = tmp_path / "store"

    cancel = threading.Event()
    first: list[str] = []

    def stop_after(p: Progress) -> None:
        first.append(p.name)
        if len(first) >= STOP_AFTER:
            cancel.set()

    with pytest.raises(ModelDeltaError, match="cancelled"):
        compare(pair, options, progress=stop_after, cancel=cancel, journal_root=root)
    path = journal_path(root, pair.key(options))
    assert path.is_file(), "the interrupted run must leave its journal"
    journaled = Journal.for_key(root, pair.key(options), [p.name for p in align(pair.a, pair.b).pairs]).load()
    assert len(journaled) == len(first) >= STOP_AFTER
    assert len(journaled) < n_pairs

    second: list[str] = []
    resumed = compare(pair, options, progress=lambda p: second.append(p.name), journal_root=root)
    assert sorted(second) == sorted(p.name for i, p in enumerate(align(pair.a, pair.b).pairs) if i not in journaled)
    assert not set(second) & set(first), "nothing journaled may be computed again"
    assert not path.exists(), "a finished run removes its journal"

    whole = compare(resolve_pair(str(a), str(b)), options)
    assert _stable(resumed) == _stable(whole)


def test_torn_or_foreign_journal_lines_are_recomputed(qwen_pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = qwen_pair
    options = EngineOptions(device="cpu")
    pair = resolve_pair(str(a), str(b))
    names = [p.name for p in align(pair.a, pair.b).pairs]
    whole = compare(pair, options)
    journal = Journal.for_key(tmp_path, pair.key(options), names)
    journal.open({})
    for i in range(3):
        journal.record(i, whole.modules[i])
    journal.close()
    with open(journal.path, "a", encoding="utf-8") as f:
        f.write('{"i": 3, "module": {"name": "trunc')  # a crash in the middle of a line
    again = Journal.for_key(tmp_path, pair.key(options), names)
    assert sorted(again.load()) == [0, 1, 2]
    other = Journal.for_key(tmp_path, pair.key(options), list(reversed(names)))
    other.path = journal.path
    assert other.load() == {}, "a journal of another tensor list is not used"
    again.open(again.load())  # rewrites without the torn line, then appends
    again.record(3, whole.modules[3])
    again.close()
    assert sorted(Journal.for_key(tmp_path, pair.key(options), names).load()) == [0, 1, 2, 3]
