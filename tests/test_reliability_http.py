"""Bounded work over Streamable HTTP: sixteen concurrent distinct calls on a server limited to two comparisons.

The calls beyond the limit queue (their progress says "queued, N ahead"), all are answered, never more than
two compute at once (the server's own compute log), and the server's resident memory (psutil, sampled from
outside) stays near that of the running comparisons. A call cancelled while queued never starts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest
from _mcp_checks import call, ok
from _mcp_helpers import CALL_TIMEOUT_S, Workspace, compute_events, http_server, server_env
from mcp import Client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]

LIMIT = 2
CALLS = 16
# Allowance over LIMIT x (one comparison's memory): allocator slack and sixteen requests' buffers. Sixteen
# comparisons at once would exceed the bound by far (each maps and reads the whole 90 MB pair).
SLACK_MB = 150
SAMPLE_S = 0.02


class Sampler:
    """Peak RSS of a process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        return self.proc.memory_info().rss


@pytest.fixture(scope="module")
def server(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    run = tmp_path_factory.mktemp("mcp-limit")
    log = run / "compute.log"
    with http_server([*ws.allow_args(), "--max-concurrent", str(LIMIT)], server_env(run / "cache", log),
                     run / "server.log") as (url, proc):
        yield url, proc.pid, log


def _most_at_once(log: Path) -> int:
    """Most comparisons computing at the same time, from the start/end events in the server's order."""
    running = most = 0
    for _, event in compute_events(log):
        running += 1 if event == "start" else -1
        most = max(most, running)
    return most


async def test_calls_beyond_the_limit_queue_and_memory_stays_bounded(server: tuple[str, int, Path],
                                                                     ws: Workspace) -> None:
    url, pid, log = server
    base = {"model_a": str(ws.model_a), "model_b": str(ws.model_b), "spectrum": "exact"}
    async with Client(url, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        with Sampler(pid) as one:  # one comparison alone: what a running comparison costs here
            ok(await call(client, "compare_checkpoints", {**base, "top_k": 1}), "compare_checkpoints")
        idle = one.now()
        single = one.peak - idle

        progress: dict[int, list] = {k: [] for k in range(2, 2 + CALLS)}
        answers: dict[int, dict] = {}

        async def one_call(k: int) -> None:
            result = await call(client, "compare_checkpoints", {**base, "top_k": k}, progress[k])
            answers[k] = ok(result, "compare_checkpoints")

        with Sampler(pid) as many:
            async with anyio.create_task_group() as tg:
                for k in progress:
                    tg.start_soon(one_call, k)
    assert len({a["report_id"] for a in answers.values()}) == CALLS  # all answered, all distinct
    assert _most_at_once(log) == LIMIT
    queued = {k: [int(m.group(1)) for _, _, msg in p if msg and (m := re.fullmatch(r"queued, (\d+) ahead", msg))]
              for k, p in progress.items()}
    waited = [k for k, ahead in queued.items() if ahead]
    assert len(waited) >= CALLS - 2 * LIMIT, queued  # most calls had to queue, and were told
    assert all(ahead == sorted(ahead, reverse=True) for ahead in queued.values()), queued  # only moving up
    assert max(max(a) for a in queued.values() if a) >= CALLS - LIMIT - 2
    bound = idle + LIMIT * max(single, 0) + SLACK_MB * 1024**2
    print(f"\nserver RSS: idle {idle / 1024**2:.0f} MB, one comparison +{single / 1024**2:.0f} MB, "
          f"{CALLS} calls held at once with --max-concurrent {LIMIT}: peak {many.peak / 1024**2:.0f} MB "
          f"(bound {bound / 1024**2:.0f} MB)")
    assert many.peak <= bound


async def test_a_call_cancelled_while_queued_never_starts(server: tuple[str, int, Path], ws: Workspace) -> None:
    url, _, log = server
    base = {"model_a": str(ws.model_a), "model_b": str(ws.model_b), "spectrum": "off"}
    before = {r for r, e in compute_events(log) if e == "start"}
    async with Client(url, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        told: list = []
        rids: list[str] = []

        async def long(k: int) -> None:
            rids.append(ok(await call(client, "compare_checkpoints", {**base, "top_k": k}),
                           "compare_checkpoints")["report_id"])

        async with anyio.create_task_group() as tg:
            for k in (100, 101):  # fill both slots
                tg.start_soon(long, k)
            with anyio.fail_after(CALL_TIMEOUT_S):
                while len({r for r, e in compute_events(log) if e == "start"} - before) < LIMIT:
                    await anyio.sleep(0.05)
            impatient = anyio.CancelScope()

            async def queued_then_cancelled() -> None:
                with impatient:
                    await call(client, "compare_checkpoints", {**base, "top_k": 102}, told)

            tg.start_soon(queued_then_cancelled)
            with anyio.fail_after(CALL_TIMEOUT_S):
                while not any(msg and msg.startswith("queued") for _, _, msg in told) and len(rids) < LIMIT:
                    await anyio.sleep(0.05)
            assert len(rids) < LIMIT, "the slots freed before the third call queued (machine too slow?)"
            impatient.cancel()
        # Both running calls were answered; the cancelled one left the queue without computing.
        started = {r for r, e in compute_events(log) if e == "start"} - before
        assert started == set(rids) and len(rids) == 2
        # The server keeps serving, the same call afterwards computes.
        ok(await call(client, "compare_checkpoints", {**base, "top_k": 102}), "compare_checkpoints")
