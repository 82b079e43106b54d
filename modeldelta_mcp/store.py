"""The result store: ComparisonReports persisted under a key, written atomically, computed once.

Key = resolved identities of both checkpoints (hub commit, or file names/sizes/mtimes) + the options
that change the numbers. A corrupt entry is treated as a miss and recomputed.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from pydantic import ValidationError

from modeldelta_mcp.models import ComparisonReport


def default_cache_dir() -> Path:
    env = os.environ.get("MODELDELTA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeldelta-mcp"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ResultStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}
        self.computations = 0  # how many comparisons this process ran (tests read it)

    def _path(self, report_id: str) -> Path:
        return self.root / "reports" / f"{report_id}.json"

    def get(self, report_id: str) -> ComparisonReport | None:
        path = self._path(report_id)
        try:
            return ComparisonReport.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError, OSError):
            return None  # corrupt or from an older schema: recompute

    def put(self, report: ComparisonReport) -> None:
        atomic_write_text(self._path(report.report_id), report.model_dump_json())

    def get_or_compute(self, report_id: str, compute: Callable[[], ComparisonReport]) -> ComparisonReport:
        """Serve from the store, or join the running job for this key, or run it once."""
        cached = self.get(report_id)
        if cached is not None:
            return cached
        with self._lock:
            fut = self._running.get(report_id)
            owner = fut is None
            if owner:
                fut = Future()
                self._running[report_id] = fut
        assert fut is not None
        if not owner:
            return fut.result()
        try:
            self.computations += 1
            report = compute()
            self.put(report)
            fut.set_result(report)
            return report
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._running.pop(report_id, None)
