"""Stored reports and their index, under one cache directory.

- `reports/<report_id>.json`: a ComparisonReport. A corrupt entry (or one from an older schema) is a miss.
- `index/<report_id>.json`: what the report was computed from (`PairRef`), so a report_id alone can be
  recomputed or joined.
- `pairs/<pair_key>.json`: the report_id last computed for a pair under any options.
- `reports/<report_id>.lock`: held (an OS file lock) by the process computing that report, so processes
  sharing the store compute it once; the kernel releases it when its holder dies, however it dies.

A store that cannot be written (read-only, full, permissions) costs the caller nothing but one warning:
the report is computed and answered, just not kept.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import ValidationError

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.store.atomic import atomic_write_text, warn_unwritable
from modeldelta_mcp.store.keys import check_report_id, is_report_id

# Set to a file path to get one line per comparison actually computed (tests count them; any process).
COMPUTE_LOG_ENV = "MODELDELTA_COMPUTE_LOG"
# Seconds between checks of the cancel event while another process holds an entry's lock.
LOCK_POLL_S = 0.25


def lock_path(root: Path, report_id: str) -> Path:
    """The lock beside a store entry: held while a process computes and writes that report."""
    return root / "reports" / f"{check_report_id(report_id)}.lock"


def default_cache_dir() -> Path:
    env = os.environ.get("MODELDELTA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeldelta-mcp"


@dataclass(frozen=True)
class PairRef:
    """Index entry: the specs and keyed options a report_id was computed from."""

    report_id: str
    model_a: str
    model_b: str
    top_k: int
    spectrum: str
    pair_key: str
    filters: dict[str, Any] | None = None  # select.TensorFilter.key() of a filtered comparison


class ResultStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()
        self._lock = threading.Lock()
        self.computations = 0  # how many comparisons this process ran

    # ---- reports -------------------------------------------------------------------------

    def _path(self, report_id: str) -> Path:
        return self.root / "reports" / f"{check_report_id(report_id)}.json"

    def get(self, report_id: str) -> ComparisonReport | None:
        path = self._path(report_id)
        try:
            return ComparisonReport.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError, OSError):
            return None  # corrupt or from an older schema: recompute

    def put(self, report: ComparisonReport) -> None:
        try:
            atomic_write_text(self._path(report.report_id), report.model_dump_json())
        except OSError as exc:
            warn_unwritable(self.root, exc)

    def finished(self, report_id: str) -> None:
        """The report is stored (or could not be): its resume journal is no longer needed."""
        for journal in (self.root / "journal").glob(f"{check_report_id(report_id)}*.jsonl"):
            try:
                journal.unlink()
            except OSError:
                pass

    @contextmanager
    def exclusive(self, report_id: str, cancel: threading.Event, waiting: Callable[[], None]) -> Iterator[None]:
        """Hold the entry's lock: one process computes a report while the others wait, then read it.

        `waiting` is called once if another process holds it. Without a writable store, no lock (and no
        report is kept either, so there is nothing to share).
        """
        try:
            lock_path(self.root, report_id).parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(lock_path(self.root, report_id)))
            told = False
            while True:
                try:
                    lock.acquire(timeout=LOCK_POLL_S)
                    break
                except Timeout:
                    if cancel.is_set():
                        raise ModelDeltaError("comparison cancelled") from None
                    if not told:
                        told = True
                        waiting()
        except OSError as exc:
            warn_unwritable(self.root, exc)
            yield
            return
        try:
            yield
        finally:
            lock.release()

    # ---- index: report_id -> pair, pair -> latest report ---------------------------------------

    def remember(self, report_id: str, model_a: str, model_b: str, top_k: int, spectrum: str,
                 pair_key: str, filters: dict[str, Any] | None = None) -> PairRef:
        ref = PairRef(report_id=check_report_id(report_id), model_a=model_a, model_b=model_b, top_k=top_k,
                      spectrum=spectrum, pair_key=pair_key, filters=filters)
        try:
            atomic_write_text(self.root / "index" / f"{ref.report_id}.json", json.dumps(asdict(ref)))
            atomic_write_text(self.root / "pairs" / f"{ref.pair_key}.json", json.dumps({"report_id": ref.report_id}))
        except OSError as exc:
            warn_unwritable(self.root, exc)
        return ref

    def lookup(self, report_id: str) -> PairRef | None:
        path = self.root / "index" / f"{check_report_id(report_id)}.json"
        try:
            return PairRef(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def latest_for_pair(self, pair_key: str) -> str | None:
        """The report_id last computed for this pair under any options, if its report is still stored."""
        try:
            report_id = json.loads((self.root / "pairs" / f"{pair_key}.json").read_text(encoding="utf-8"))["report_id"]
            return report_id if is_report_id(report_id) and self._path(report_id).is_file() else None
        except (OSError, ValueError, TypeError, KeyError):
            return None

    # ---- accounting ------------------------------------------------------------------------------

    def note_computation(self, report_id: str, event: str = "start") -> None:
        """Count a comparison (event "start") and log its events: start, done, cancelled, failed."""
        if event == "start":
            with self._lock:
                self.computations += 1
        log = os.environ.get(COMPUTE_LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as f:  # O_APPEND: one short line per write, any process
                f.write(f"{report_id} {event} {os.getpid()} {time.time():.3f}\n")
