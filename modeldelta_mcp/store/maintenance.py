"""`modeldelta store list|prune`: what the result store holds, and removing it by age, by size or all.

Every removal is one unlink (atomic on POSIX): a reader sees a report or a miss, never half of one. A report
whose computation holds its lock (another process is writing it right now) is skipped. Besides reports,
prune removes what killed processes leave: temp files of interrupted atomic writes older than STALE_TEMP_S,
and journals (resume state) older than the age given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from modeldelta_mcp.store.keys import is_report_id
from modeldelta_mcp.store.results import lock_path

__all__ = ["STALE_TEMP_S", "Entry", "Pruned", "list_entries", "lock_path", "parse_age", "parse_size", "prune"]

# An atomic write finishes within seconds; a temp file this old was left by a killed writer.
STALE_TEMP_S = 3600.0


@dataclass(frozen=True)
class Entry:
    report_id: str
    model_a: str | None
    model_b: str | None
    bytes: int
    modified: float  # epoch seconds of the report file


@dataclass
class Pruned:
    reports: list[str] = field(default_factory=list)
    skipped_locked: list[str] = field(default_factory=list)
    other_files: int = 0  # temp files, journals, index and pair entries, lock files
    freed_bytes: int = 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def list_entries(root: Path) -> list[Entry]:
    """Stored reports, oldest first."""
    out = []
    for path in sorted((root / "reports").glob("*.json")):
        report_id = path.stem
        if not is_report_id(report_id):
            continue
        try:
            st = path.stat()
        except OSError:
            continue  # removed meanwhile
        model_a = model_b = None
        index = root / "index" / f"{report_id}.json"
        try:
            ref = json.loads(index.read_text(encoding="utf-8"))
            model_a, model_b = str(ref["model_a"]), str(ref["model_b"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        out.append(Entry(report_id, model_a, model_b, st.st_size + _size(index), st.st_mtime))
    return sorted(out, key=lambda e: e.modified)


def _unlink(path: Path, pruned: Pruned, counted: bool = True) -> bool:
    size = _size(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    pruned.freed_bytes += size
    if counted:
        pruned.other_files += 1
    return True


def _remove_report(root: Path, entry: Entry, pruned: Pruned) -> None:
    lock = FileLock(str(lock_path(root, entry.report_id)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        pruned.skipped_locked.append(entry.report_id)
        return
    try:
        if _unlink(root / "reports" / f"{entry.report_id}.json", pruned, counted=False):
            pruned.reports.append(entry.report_id)
        _unlink(root / "index" / f"{entry.report_id}.json", pruned)
    finally:
        lock.release()


def _sweep(root: Path, pruned: Pruned, now: float, older_than: float | None, everything: bool) -> None:
    """Temp files of killed writers, old journals, pair pointers to removed reports."""
    for sub in ("reports", "index", "pairs", "journal"):
        for tmp in (root / sub).glob(".*.tmp"):
            try:
                age = now - tmp.stat().st_mtime
            except OSError:
                continue
            if age > STALE_TEMP_S:  # a younger one may be a write in progress, even under --all
                _unlink(tmp, pruned)
    for journal in (root / "journal").glob("*.jsonl"):
        try:
            age = now - journal.stat().st_mtime
        except OSError:
            continue
        if not is_report_id(journal.stem[:16]):
            continue
        if everything or (older_than is not None and age > older_than):
            lock = FileLock(str(lock_path(root, journal.stem[:16])), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue  # a computation is appending to it
            try:
                _unlink(journal, pruned)
            finally:
                lock.release()
    for pair in (root / "pairs").glob("*.json"):
        try:
            report_id = json.loads(pair.read_text(encoding="utf-8"))["report_id"]
        except (OSError, ValueError, KeyError, TypeError):
            report_id = None
        if everything or not isinstance(report_id, str) or not (root / "reports" / f"{report_id}.json").is_file():
            _unlink(pair, pruned)
    if everything:
        for lock_file in (root / "reports").glob("*.lock"):
            _unlink(lock_file, pruned)


def prune(root: Path, *, older_than: float | None = None, max_bytes: int | None = None, everything: bool = False,
          now: float | None = None) -> Pruned:
    """Remove reports older than `older_than` seconds, then the oldest until the store holds at most
    `max_bytes`, or all of them; and what killed processes left behind."""
    now = time.time() if now is None else now
    pruned = Pruned()
    entries = list_entries(root)
    doomed = [e for e in entries if everything or (older_than is not None and now - e.modified > older_than)]
    if max_bytes is not None:
        kept = [e for e in entries if e not in doomed]
        total = sum(e.bytes for e in kept)
        for e in kept:  # oldest first
            if total <= max_bytes:
                break
            doomed.append(e)
            total -= e.bytes
    for e in doomed:
        _remove_report(root, e, pruned)
    _sweep(root, pruned, now, older_than, everything)
    return pruned


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "t": 1024**4, "tb": 1024**4}


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' -> seconds."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _UNITS or not value:
        raise ValueError(f"{text!r}: expected a number and a unit (s, m, h, d, w), e.g. 30d")
    return float(value) * _UNITS[unit]


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GB', '4096' -> bytes (powers of 1024)."""
    s = text.strip().lower()
    digits = s.rstrip("bkmgt")
    unit = s[len(digits):]
    if unit not in _SIZES or not digits:
        raise ValueError(f"{text!r}: expected a size such as 500M or 2G")
    return int(float(digits) * _SIZES[unit])
