"""HTTP security of the installed server: Host/Origin checks on loopback, a bearer token anywhere else.

127.0.0.2 is still this machine (the whole 127/8 is loopback on Linux) but is not one of the names the SDK
protects, so it stands for "a bind beyond 127.0.0.1/localhost" without opening a port to the network.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from _mcp_checks import call, error_text, ok
from _mcp_helpers import CALL_TIMEOUT_S, Workspace, free_port, http_server, server_env, server_script
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

TOKEN = "t0k3n-" + "9f2c41d07be35a68" * 3  # what `openssl rand -hex` would give, plus a marker to grep for
OTHER_HOST = "127.0.0.2"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "security-test", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _post(url: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    with httpx2.Client(timeout=30) as http:
        return http.post(url, content=json.dumps(INITIALIZE), headers={**HEADERS, **(headers or {})})


@pytest.fixture(scope="module")
def loopback(ws: Workspace, run_dir: Path) -> Iterator[str]:
    with http_server(ws.allow_args(), server_env(run_dir / "cache", run_dir / "compute.log"),
                     run_dir / "loopback.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def token_file(run_dir: Path) -> Path:
    path = run_dir / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def guarded(ws: Workspace, run_dir: Path, token_file: Path) -> Iterator[tuple[str, Path]]:
    log = run_dir / "guarded.log"
    with http_server([*ws.allow_args(), "--auth-token-file", str(token_file)],
                     server_env(run_dir / "cache", run_dir / "compute.log"), log, host=OTHER_HOST) as (url, _):
        yield url, log


def test_loopback_bind_refuses_a_foreign_host_and_origin(loopback: str) -> None:
    """The SDK's DNS-rebinding protection, on by default for 127.0.0.1: 421 for Host, 403 for Origin."""
    assert _post(loopback, {"Host": "evil.example:80"}).status_code == 421
    assert _post(loopback, {"Origin": "http://evil.example"}).status_code == 403
    assert _post(loopback, {"Origin": loopback.rsplit("/mcp", 1)[0]}).status_code == 200
    assert _post(loopback).status_code == 200


def test_a_bind_beyond_loopback_names_refuses_to_start_without_a_token(ws: Workspace, run_dir: Path) -> None:
    for host in (OTHER_HOST, "0.0.0.0"):
        done = subprocess.run([server_script(), "--transport", "streamable-http", "--host", host, "--port",
                               str(free_port()), *ws.allow_args()], env=server_env(run_dir / "c", run_dir / "l"),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert "--auth-token-file" in done.stderr and "MODELDELTA_MCP_TOKEN" in done.stderr, done.stderr
    # A token too short to resist guessing is refused, and the message does not repeat it.
    env = server_env(run_dir / "c", run_dir / "l", MODELDELTA_MCP_TOKEN="abc123")
    done = subprocess.run([server_script(), "--transport", "streamable-http", "--host", OTHER_HOST, "--port",
                           str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "at least 16 characters" in done.stderr and "abc123" not in done.stderr


def test_beyond_loopback_every_request_needs_the_bearer_token(guarded: tuple[str, Path]) -> None:
    url, log = guarded
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-enough-length"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        answer = _post(url, headers)
        assert answer.status_code == 401, (headers, answer.status_code)
        assert TOKEN not in answer.text
    answer = _post(url, {"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert TOKEN not in answer.text
    assert TOKEN not in log.read_text()


async def test_a_client_with_the_token_uses_every_tool(guarded: tuple[str, Path], ws: Workspace,
                                                        anyio_backend: str) -> None:
    url, log = guarded
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=CALL_TIMEOUT_S) as client:
        answer = ok(await call(client, "inspect_checkpoint", {"model": str(ws.model_b)}), "inspect_checkpoint")
        assert TOKEN not in json.dumps(answer)
        # report_id and resource URIs cannot walk out of the store.
        for rid in ("../../etc/passwd", "0123456789abcdef/../../x", "%2e%2e%2f%2e%2e", "0123456789ABCDEF",
                    "0123456789abcdef\n"):
            assert "report_id" in error_text(await call(client, "get_diagnosis", {"report_id": rid}))
        for uri in ("modeldelta://reports/..%2F..%2Fetc%2Fpasswd", "modeldelta://reports/%2e%2e",
                    "modeldelta://reports/0123456789abcdef%2F..", "modeldelta://reports/" + "a" * 5000):
            with pytest.raises(MCPError) as err:
                await client.read_resource(uri)
            assert len(str(err.value)) < 400 and "\n" not in str(err.value).strip()
    assert TOKEN not in log.read_text()


async def test_the_token_may_come_from_the_environment(ws: Workspace, run_dir: Path, anyio_backend: str) -> None:
    env = server_env(run_dir / "cache", run_dir / "compute.log", MODELDELTA_MCP_TOKEN=TOKEN)
    with http_server(ws.allow_args(), env, run_dir / "env-token.log", host=OTHER_HOST) as (url, _):
        assert _post(url).status_code == 401
        assert _post(url, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200


async def test_which_binds_need_a_token(anyio_backend: str) -> None:
    from modeldelta_mcp.errors import ModelDeltaError
    from modeldelta_mcp.http_auth import auth_for

    for host in ("127.0.0.1", "::1", "localhost"):
        assert auth_for(host, None) == {}  # the SDK's Host/Origin checks apply
    for host in (OTHER_HOST, "0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(ModelDeltaError, match="auth-token-file"):
            auth_for(host, None)
    verifier = auth_for(OTHER_HOST, TOKEN)["token_verifier"]
    assert await verifier.verify_token(TOKEN) is not None
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert await verifier.verify_token(wrong) is None
    assert TOKEN not in repr((await verifier.verify_token(TOKEN)).model_dump())
