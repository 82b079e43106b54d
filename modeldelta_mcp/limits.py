"""How many comparisons a server runs at once, and the FIFO queue of the rest.

Every running comparison holds the engine's working set (engine.run.DEFAULT_MEMORY_BUDGET, 288 MiB, plus
file pages it touches) and already uses every core (torch threads = cores), so running more than a few at
once only splits the CPU and adds memory. A server therefore computes at most `limit` comparisons at a
time; the others wait in arrival order, report "queued, N ahead" as progress, and leave the queue at once
when their last caller goes away (they have computed nothing a grace period could save).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

# Resident memory one running comparison adds to a server: the engine's 288 MiB working set plus the
# mmapped file pages and report under construction (measured on the 0.5B benchmark pair, docs/operations.md).
COMPARISON_MEMORY_BYTES = 512 * 1024**2
# Share of the machine's memory the default limit lets comparisons take; the rest stays for the page
# cache (which makes re-reads fast) and for whatever else runs on the machine.
MEMORY_SHARE = 0.25


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def default_max_concurrent(cores: int | None = None, memory_bytes: int | None = None) -> int:
    """min(cores, MEMORY_SHARE × memory / COMPARISON_MEMORY_BYTES), at least 1.

    Cores: one comparison already keeps every core busy, so more at once than there are cores only adds
    memory. Memory: at most a quarter of the machine goes to running comparisons. (2 cores, 24 GB: 2.)
    """
    cores = cores or _cores()
    memory_bytes = memory_bytes or _memory_bytes()
    by_memory = int(memory_bytes * MEMORY_SHARE // COMPARISON_MEMORY_BYTES) if memory_bytes else cores
    return max(1, min(cores, by_memory))


class _Ticket:
    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False


QueuedFn = Callable[[int], Awaitable[None]]  # called with how many wait ahead, whenever that changes


class ComparisonQueue:
    """At most `limit` holders at once; waiters are served first come, first served (one event loop)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the limit of concurrent comparisons must be at least 1")
        self.limit = limit
        self.running = 0
        self.peak_running = 0  # the most held at once since start (tests and operators read it)
        self._queue: deque[_Ticket] = deque()
        self._changed = anyio.Event()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def acquire(self, on_queued: QueuedFn | None = None) -> None:
        """Take a slot, waiting in line if all are held. Cancelled while waiting, it leaves the line."""
        if self.running < self.limit and not self._queue:
            self._take()
            return
        ticket = _Ticket()
        self._queue.append(ticket)
        self._notify()
        told: int | None = None
        try:
            while not ticket.granted:
                changed = self._changed
                ahead = self._queue.index(ticket)
                if on_queued is not None and ahead != told:
                    told = ahead
                    await on_queued(ahead)
                    continue
                await changed.wait()
        except BaseException:
            if ticket.granted:
                self.release()  # granted while being cancelled: pass the slot on
            else:
                self._queue.remove(ticket)
                self._notify()
            raise

    def release(self) -> None:
        if self._queue:
            self._queue.popleft().granted = True  # the slot passes straight to the first in line
        else:
            self.running -= 1
        self._notify()

    def _take(self) -> None:
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
