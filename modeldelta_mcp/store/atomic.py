"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from modeldelta_mcp import testhooks

log = logging.getLogger("modeldelta_mcp.store")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_unwritable(root: Path, exc: OSError) -> None:
    """One warning per store and process: the work goes on without storing."""
    with _warned_lock:
        if str(root) in _warned:
            return
        _warned.add(str(root))
    log.warning("result store %s is not writable (%s); computing without storing", root,
                exc.strerror or type(exc).__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; the renamed result should have the mode a plain open() would give it.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.parent.name == "reports":
            testhooks.pause("store")  # crash tests: the temp file is written, the report not yet in place
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
