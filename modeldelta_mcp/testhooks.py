"""Pause points for crash tests: a process stops at a named point so a test can kill -9 it right there.

Inert unless MODELDELTA_TEST_PAUSE_AT names the point: the process then writes its pid to the file named by
MODELDELTA_TEST_PAUSE_FILE and sleeps until killed. Points: "read" (tensors are being read and journaled),
"journal" (half of a journal line is written), "store" (the report's temp file is written, not yet renamed).
"""

from __future__ import annotations

import os
import time

PAUSE_AT_ENV = "MODELDELTA_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "MODELDELTA_TEST_PAUSE_FILE"
# "read" pauses once this many tensors are finished (the journal then holds about as many lines).
READ_PAUSE_AFTER = 5


def armed(point: str) -> bool:
    return os.environ.get(PAUSE_AT_ENV) == point


def pause(point: str) -> None:
    """Stop here for good if the test armed this point (the test kills the process)."""
    if not armed(point):
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        with open(marker, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
    while True:
        time.sleep(60)
