"""End to end over streamable HTTP: the installed script serves 127.0.0.1:<free port>, the SDK Client calls it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from _mcp_checks import (
    call,
    check_all_tools,
    check_concurrent_single_flight,
    check_listing,
    check_refusals,
    error_text,
    ok,
    start_then_abandon,
)
from _mcp_helpers import CALL_TIMEOUT_S, Workspace, compute_events, http_server, server_env, starts
from mcp import Client
from mcp_types import ListRootsResult, Root
from pydantic import FileUrl

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@contextmanager
def _server(ws: Workspace, run_dir: Path, log: Path, name: str) -> Iterator[str]:
    # --cancel-grace 0: a cancelled request stops its comparison at once (the stdio tests cover the grace).
    with http_server([*ws.allow_args(), "--cancel-grace", "0"], server_env(run_dir / "cache", log),
                     run_dir / f"{name}.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def url(ws: Workspace, run_dir: Path, log: Path) -> Iterator[str]:
    with _server(ws, run_dir, log, "server") as served:
        yield served


@pytest.fixture(scope="module")
async def client(url: str, anyio_backend: str) -> AsyncIterator[Client]:
    async with Client(url, read_timeout_seconds=CALL_TIMEOUT_S) as c:
        yield c


async def test_tools_listed_with_input_and_output_schemas(client: Client) -> None:
    await check_listing(client)


async def test_each_tool_on_a_real_pair_and_the_store_survives_a_restart(
    client: Client, ws: Workspace, run_dir: Path, log: Path
) -> None:
    rid = await check_all_tools(client, ws, log, top_k=16, spectrum="off")
    # A new server process on the same cache answers from the persistent store.
    with _server(ws, run_dir, log, "restarted") as url2:
        async with Client(url2, read_timeout_seconds=CALL_TIMEOUT_S) as other:
            ok(await call(other, "get_diagnosis", {"report_id": rid}), "get_diagnosis")
            ok(await call(other, "top_changed_modules", {"model_a": str(ws.model_a), "model_b": str(ws.model_b)}),
               "top_changed_modules")
    assert starts(log, rid) == 1


async def test_two_concurrent_identical_calls_compute_once(client: Client, ws: Workspace, log: Path) -> None:
    await check_concurrent_single_flight(client, ws, log, top_k=3)


async def test_cancelling_a_request_stops_the_comparison(client: Client, ws: Workspace, log: Path) -> None:
    args = {"model_a": str(ws.model_a), "model_b": str(ws.model_b), "top_k": 9, "spectrum": "off"}
    rid = await start_then_abandon(client, args, log)
    with anyio.fail_after(CALL_TIMEOUT_S):
        while not [e for e in compute_events(log, rid) if e[1] != "start"]:
            await anyio.sleep(0.05)
    assert [e for _, e in compute_events(log, rid)] == ["start", "cancelled"]
    # The server keeps serving, and the same call afterwards computes in full.
    progress: list = []
    summary = ok(await call(client, "compare_checkpoints", args, progress), "compare_checkpoints")
    assert summary["report_id"] == rid and progress
    assert [e for _, e in compute_events(log, rid)] == ["start", "cancelled", "start", "done"]


async def test_outside_roots_corrupt_files_and_bad_arguments_are_tool_errors(client: Client, ws: Workspace) -> None:
    await check_refusals(client, ws)


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026 protocol: an input_required round; legacy: roots/list
async def test_roots_declared_by_the_client_are_allowed_too(url: str, ws: Workspace, mode: str) -> None:
    asked: list[bool] = []

    async def list_roots(context: object) -> ListRootsResult:
        asked.append(True)
        return ListRootsResult(roots=[Root(uri=FileUrl(ws.outside.parent.as_uri()), name="outside")])

    async with Client(url, read_timeout_seconds=CALL_TIMEOUT_S, list_roots_callback=list_roots,
                      mode=mode) as with_roots:
        # Inside the server's own roots the client is not even asked.
        ok(await call(with_roots, "inspect_checkpoint", {"model": str(ws.model_b)}), "inspect_checkpoint")
        assert not asked
        answer = ok(await call(with_roots, "inspect_checkpoint", {"model": str(ws.outside)}), "inspect_checkpoint")
        assert asked and answer["checkpoint"]["n_tensors"] == 1
        # Its roots do not open anything else.
        text = error_text(await call(with_roots, "inspect_checkpoint", {"model": str(ws.corrupt.parent.parent)}))
        assert "outside the allowed roots" in text
