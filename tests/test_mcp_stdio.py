"""End to end over stdio: the SDK's own Client launches the installed `modeldelta-mcp` console script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _mcp_checks import (
    call,
    check_all_tools,
    check_concurrent_single_flight,
    check_listing,
    check_refusals,
    ok,
    start_then_abandon,
)
from _mcp_helpers import Workspace, compute_events, server_env, starts, stdio_client
from mcp import Client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def client(ws: Workspace, run_dir: Path, log: Path, anyio_backend: str) -> AsyncIterator[Client]:
    async with stdio_client(ws.allow_args(), server_env(run_dir / "cache", log), run_dir) as c:
        yield c


async def test_tools_listed_with_input_and_output_schemas(client: Client) -> None:
    await check_listing(client)


async def test_each_tool_on_a_real_pair_from_one_computation(client: Client, ws: Workspace, log: Path) -> None:
    await check_all_tools(client, ws, log, top_k=20, spectrum="exact")


async def test_two_concurrent_identical_calls_compute_once(client: Client, ws: Workspace, log: Path) -> None:
    await check_concurrent_single_flight(client, ws, log, top_k=3)


async def test_a_call_asked_again_after_giving_up_joins_the_running_job(
    client: Client, ws: Workspace, log: Path
) -> None:
    args = {"model_a": str(ws.model_a), "model_b": str(ws.model_b), "top_k": 4, "spectrum": "off"}
    rid = await start_then_abandon(client, args, log)
    # The client gave up and cancelled; the server keeps the job for its grace period (default 120 s).
    progress: list = []
    summary = ok(await call(client, "compare_checkpoints", args, progress), "compare_checkpoints")
    assert summary["report_id"] == rid
    assert [e for _, e in compute_events(log, rid)] == ["start", "done"], "asking again did not join the job"
    # A stored answer sends no progress: receiving some proves the second call joined the running job.
    assert progress and progress[-1][0] == progress[-1][1]


async def test_a_corrupt_store_entry_is_recomputed(client: Client, ws: Workspace, run_dir: Path, log: Path) -> None:
    args = {"model_a": str(ws.model_a), "model_b": str(ws.model_b), "top_k": 6, "spectrum": "off"}
    rid = ok(await call(client, "compare_checkpoints", args), "compare_checkpoints")["report_id"]
    entry = run_dir / "cache" / "reports" / f"{rid}.json"
    entry.write_text(entry.read_text()[:1000])  # truncated, as after a crash of a non-atomic writer
    # By report_id alone: the index knows the pair, so the entry is recomputed rather than failing.
    ok(await call(client, "get_diagnosis", {"report_id": rid}), "get_diagnosis")
    assert starts(log, rid) == 2
    ok(await call(client, "layer_profile", {"report_id": rid}), "layer_profile")
    assert starts(log, rid) == 2


async def test_outside_roots_corrupt_files_and_bad_arguments_are_tool_errors(client: Client, ws: Workspace) -> None:
    await check_refusals(client, ws)
