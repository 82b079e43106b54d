"""The comparison queue: at most `limit` at once, first come first served, positions reported, cancellable."""

from __future__ import annotations

import anyio
import pytest

from modeldelta_mcp.limits import COMPARISON_MEMORY_BYTES, ComparisonQueue, default_max_concurrent

pytestmark = pytest.mark.anyio

GB = 1024**3


def test_default_limit_follows_cores_and_memory() -> None:
    assert default_max_concurrent(cores=2, memory_bytes=24 * GB) == 2  # the machine
    assert default_max_concurrent(cores=64, memory_bytes=16 * GB) == 16 * GB // 4 // COMPARISON_MEMORY_BYTES
    assert default_max_concurrent(cores=8, memory_bytes=1 * GB) == 1  # never 0
    assert default_max_concurrent() >= 1


async def test_fifo_limit_positions_and_cancellation() -> None:
    queue = ComparisonQueue(2)
    order: list[int] = []
    seen: dict[int, list[int]] = {}
    holding = 0
    most = 0
    release = anyio.Event()

    async def worker(i: int) -> None:
        nonlocal holding, most

        async def on_queued(ahead: int) -> None:
            seen.setdefault(i, []).append(ahead)

        await queue.acquire(on_queued)
        order.append(i)
        holding += 1
        most = max(most, holding)
        await release.wait()
        await anyio.sleep(0.02 * (i + 1))  # slots free one at a time, so the grant order shows
        holding -= 1
        queue.release()

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(worker, i)
            await anyio.sleep(0.01)  # arrive in order
        # Worker 4 gives up while queued: it leaves the line and the ones behind it move up.
        cancelled = anyio.CancelScope()

        async def impatient() -> None:
            with cancelled:
                await queue.acquire()
                pytest.fail("a cancelled waiter must not get a slot")

        tg.start_soon(impatient)
        await anyio.sleep(0.01)
        assert (queue.running, queue.waiting) == (2, 5)
        cancelled.cancel()
        await anyio.sleep(0.01)
        assert queue.waiting == 4
        release.set()
    assert order == [0, 1, 2, 3, 4, 5]
    assert most == 2 and queue.peak_running == 2 and queue.running == 0
    assert seen[2][0] == 0 and seen[5] == [3, 2, 1, 0]  # "N ahead", counting down
    assert 0 not in seen and 1 not in seen  # served at once, never queued
