"""Resume journal: per-tensor results of a running comparison, so an interrupted one continues.

One JSON-lines file per comparison key under the store root (`<root>/journal/<key>.jsonl`): a header
line naming the key and the tensor list, then one line per finished tensor. Each line is written
with a single write() and flushed; fsync runs every FSYNC_EVERY lines and on close, so a crash loses
at most the lines since the last fsync (they are recomputed). A torn last line is dropped on load and
the file is rewritten atomically before appending again. The file goes once the report is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from modeldelta_mcp import testhooks
from modeldelta_mcp.models import ModuleDelta
from modeldelta_mcp.store.atomic import atomic_write_text, warn_unwritable

# Lines (tensors) between fsyncs, and the longest a written line waits for one: durability of a 70B run
# (a few thousand tensors) without an fsync per tensor.
FSYNC_EVERY = 32
FSYNC_SECONDS = 5.0
JOURNAL_VERSION = 1


def journal_path(root: Path, key: str) -> Path:
    return root / "journal" / f"{key}.jsonl"


class Journal:
    def __init__(self, path: Path, key: str, names: list[str]) -> None:
        self.path = path
        names_digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()
        self._header = {"journal": JOURNAL_VERSION, "key": key, "n": len(names), "names": names_digest}
        self._names = names
        self._file: IO[str] | None = None
        self._unsynced = 0
        self._recorded = 0
        self._last_sync = time.monotonic()

    @classmethod
    def for_key(cls, root: Path, key: str, names: list[str]) -> Journal:
        return cls(journal_path(root, key), key, names)

    def load(self) -> dict[int, ModuleDelta]:
        """Results of a previous run of this very comparison; {} when none (or another one's file)."""
        try:
            lines = self.path.read_text(encoding="utf-8").split("\n")
        except (FileNotFoundError, UnicodeDecodeError, OSError):
            return {}
        try:
            if json.loads(lines[0]) != self._header:
                return {}
        except ValueError:
            return {}
        done: dict[int, ModuleDelta] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                i = int(entry["i"])
                module = ModuleDelta.model_validate(entry["module"])
            except (ValueError, KeyError, TypeError, ValidationError):
                break  # a torn last line (or anything after it) is recomputed
            if not 0 <= i < len(self._names) or module.name != self._names[i]:
                break
            done[i] = module
        return done

    def open(self, done: dict[int, ModuleDelta]) -> None:
        """Start appending after exactly the `done` entries (rewritten atomically: no torn line remains)."""
        lines = [json.dumps(self._header)] + [self._line(i, m) for i, m in sorted(done.items())]
        try:
            atomic_write_text(self.path, "\n".join(lines) + "\n")
            self._file = open(self.path, "a", encoding="utf-8")  # held across the run, closed in close()
        except OSError as exc:  # a read-only or full store: the comparison runs without a journal
            self._give_up(exc)

    def record(self, index: int, module: ModuleDelta) -> None:
        if self._file is None:
            return
        line = self._line(index, module) + "\n"
        try:
            if testhooks.armed("journal") and self._recorded >= testhooks.READ_PAUSE_AFTER:
                self._file.write(line[: len(line) // 2])  # crash tests: killed with half a line written
                self._file.flush()
                testhooks.pause("journal")
            self._file.write(line)
            self._file.flush()
            self._recorded += 1
            self._unsynced += 1
            if self._unsynced >= FSYNC_EVERY or time.monotonic() - self._last_sync >= FSYNC_SECONDS:
                self._sync()
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        warn_unwritable(self.path.parent.parent, exc)
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None

    def close(self) -> None:
        if self._file is not None:
            try:
                self._sync()
                self._file.close()
            except OSError as exc:
                self._give_up(exc)
            self._file = None

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _sync(self) -> None:
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
        self._unsynced = 0
        self._last_sync = time.monotonic()

    @staticmethod
    def _line(index: int, module: ModuleDelta) -> str:
        return json.dumps({"i": index, "module": module.model_dump(mode="json")}, separators=(",", ":"))
