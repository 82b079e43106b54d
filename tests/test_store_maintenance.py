"""`modeldelta store list|prune` on a store laid out as the service writes it (no comparison needed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from filelock import FileLock

from modeldelta_mcp.store.maintenance import (
    STALE_TEMP_S,
    list_entries,
    lock_path,
    parse_age,
    parse_size,
    prune,
)

DAY = 86400.0


def _entry(root: Path, report_id: str, age_s: float, size: int, now: float) -> None:
    for sub in ("reports", "index", "pairs", "journal"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    report = root / "reports" / f"{report_id}.json"
    report.write_text("x" * size)
    (root / "index" / f"{report_id}.json").write_text(json.dumps({"model_a": "a", "model_b": f"b-{report_id}"}))
    (root / "pairs" / f"p{report_id}.json").write_text(json.dumps({"report_id": report_id}))
    os.utime(report, (now - age_s, now - age_s))


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, float]:
    now = time.time()
    root = tmp_path / "store"
    _entry(root, "a" * 16, 40 * DAY, 1000, now)
    _entry(root, "b" * 16, 10 * DAY, 2000, now)
    _entry(root, "c" * 16, 1 * DAY, 4000, now)
    return root, now


def test_list_shows_every_report_oldest_first(store: tuple[Path, float]) -> None:
    root, _ = store
    entries = list_entries(root)
    assert [e.report_id[0] for e in entries] == ["a", "b", "c"]
    assert entries[2].model_b == "b-" + "c" * 16 and entries[2].bytes > 4000


def test_prune_by_age_then_by_size(store: tuple[Path, float]) -> None:
    root, now = store
    done = prune(root, older_than=30 * DAY, now=now)
    assert done.reports == ["a" * 16]
    assert not (root / "index" / f"{'a' * 16}.json").exists() and not (root / "pairs" / f"p{'a' * 16}.json").exists()
    done = prune(root, max_bytes=4500, now=now)
    assert done.reports == ["b" * 16] and done.freed_bytes >= 2000
    assert [e.report_id for e in list_entries(root)] == ["c" * 16]


def test_prune_skips_a_report_being_written_and_cleans_what_killed_writers_left(store: tuple[Path, float]) -> None:
    root, now = store
    stale = root / "reports" / ".cccc.json.abc.tmp"
    stale.write_text("half a report")
    os.utime(stale, (now - 2 * STALE_TEMP_S, now - 2 * STALE_TEMP_S))
    fresh = root / "reports" / ".bbbb.json.def.tmp"
    fresh.write_text("being written")
    with FileLock(str(lock_path(root, "b" * 16))):
        done = prune(root, everything=True, now=now)
    assert done.skipped_locked == ["b" * 16]
    assert sorted(done.reports) == ["a" * 16, "c" * 16]
    assert (root / "reports" / f"{'b' * 16}.json").is_file()
    assert not stale.exists() and fresh.exists()  # a fresh temp file may be a write in progress


def test_ages_and_sizes_parse() -> None:
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 12 * 3600 and parse_age("1.5w") == 1.5 * 7 * DAY
    assert parse_size("500M") == 500 * 1024**2 and parse_size("2G") == 2 * 1024**3 and parse_size("4096") == 4096
    for bad in ("", "d", "30", "3x"):
        with pytest.raises(ValueError):
            parse_age(bad)
    with pytest.raises(ValueError):
        parse_size("lots")
