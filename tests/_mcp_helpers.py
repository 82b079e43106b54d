"""Helpers for the MCP end-to-end tests: the installed console script, a real pair, schema checks, servers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from mcp import Client, StdioServerParameters

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
TOOLS = ["compare_checkpoints", "get_diagnosis", "top_changed_modules", "layer_profile", "inspect_checkpoint",
         "compare_many", "find_base"]
# Seconds slept after each tensor by the server under test (its test hook): a MiniLM comparison then takes
# at least ~2 s, long enough to be joined or cancelled midway, short enough for the suite.
TEST_DELAY_S = "0.02"
# Generous: the machine is shared and a comparison may queue behind other work; never a timing assertion.
CALL_TIMEOUT_S = 300.0


def server_script() -> str:
    """The installed `modeldelta-mcp` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "modeldelta-mcp"
    if script.is_file():
        return str(script)
    found = shutil.which("modeldelta-mcp")
    assert found, "modeldelta-mcp is not installed (pip install -e .)"
    return found


@dataclass(frozen=True)
class Workspace:
    root: Path  # the allowed root handed to --allow-path
    model_a: Path  # the real all-MiniLM-L6-v2 directory (allowed by its own --allow-path)
    model_b: Path  # a derived copy: a few rows of layer-3 matrices perturbed
    corrupt: Path  # a directory whose model.safetensors is garbage
    outside: Path  # a valid checkpoint outside every allowed root
    escape: Path  # a symlink inside the root that points outside

    def allow_args(self) -> list[str]:
        return ["--allow-path", str(self.root), "--allow-path", str(self.model_a)]


def build_workspace(base: Path, minilm_dir: Path) -> Workspace:
    """Write the derived checkpoints once per session (idempotent: later calls reuse the files)."""
    import torch
    from safetensors.torch import load_file, save_file

    ws = Workspace(root=base / "allowed", model_a=minilm_dir, model_b=base / "allowed" / "minilm-b",
                   corrupt=base / "allowed" / "corrupt", outside=base / "outside" / "tiny",
                   escape=base / "allowed" / "escape")
    if (base / "ready").is_file():
        return ws
    sd = load_file(str(minilm_dir / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    derived = {}
    for name, t in sd.items():
        t = t.clone()
        if t.ndim == 2 and name.startswith("encoder.layer.3."):
            t[:4] += 0.01 * torch.randn(t[:4].shape, generator=gen)
        derived[name] = t.contiguous()
    ws.model_b.mkdir(parents=True)
    save_file(derived, str(ws.model_b / "model.safetensors"))
    shutil.copy(minilm_dir / "config.json", ws.model_b / "config.json")

    ws.corrupt.mkdir(parents=True)
    (ws.corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64)
    ws.outside.mkdir(parents=True)
    save_file({"w": torch.ones(4, 4)}, str(ws.outside / "model.safetensors"))
    ws.escape.symlink_to(ws.outside, target_is_directory=True)
    (base / "ready").write_text("ok")
    return ws


def server_env(cache: Path, log: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "PYTHONPATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT"}}
    env.update(MODELDELTA_CACHE_DIR=str(cache), MODELDELTA_COMPUTE_LOG=str(log), HF_HUB_OFFLINE="1",
               MODELDELTA_MCP_TEST_DELAY_S=TEST_DELAY_S)
    env.update(extra)
    return env


def compute_events(log: Path, report_id: str | None = None) -> list[tuple[str, str]]:
    """(report_id, event) lines the servers wrote: start, done, cancelled, failed."""
    if not log.is_file():
        return []
    rows = [line.split()[:2] for line in log.read_text().splitlines() if line.strip()]
    return [(r, e) for r, e in rows if report_id is None or r == report_id]


def starts(log: Path, report_id: str) -> int:
    return sum(1 for _, e in compute_events(log, report_id) if e == "start")


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def validate(name: str, instance: Any) -> None:
    """Validate against the checked-in schemas/ file, as an orchestrator would."""
    jsonschema.Draft202012Validator(schema(name)).validate(instance)


def without_dialect(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k != "$schema"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_http_server(args: list[str], env: dict[str, str], port: int, log_path: Path,
                      host: str = "127.0.0.1") -> subprocess.Popen:
    """Start the installed script on streamable HTTP and wait until its port accepts connections."""
    log = open(log_path, "wb")  # closed with the process by stop_process
    proc = subprocess.Popen([server_script(), "--transport", "streamable-http", "--host", host,
                             "--port", str(port), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    proc._log_file = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"modeldelta-mcp exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"modeldelta-mcp did not listen on port {port}: {log_path.read_text()[-2000:]}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = getattr(proc, "_log_file", None)
    if log is not None:
        log.close()


@contextmanager
def http_server(args: list[str], env: dict[str, str], log_path: Path,
                host: str = "127.0.0.1") -> Iterator[tuple[str, subprocess.Popen]]:
    """The installed script serving streamable HTTP on a free port, ready: (its /mcp URL, the process); stopped
    on exit."""
    port = free_port()
    proc = start_http_server(args, env, port, log_path, host=host)
    try:
        yield f"http://{host}:{port}/mcp", proc
    finally:
        stop_process(proc)


def stdio_client(args: list[str], env: dict[str, str], cwd: Path) -> Client:
    """An SDK Client that launches the installed script over stdio when entered (`async with`)."""
    params = StdioServerParameters(command=server_script(), args=args, env=env, cwd=str(cwd))
    return Client(params, read_timeout_seconds=CALL_TIMEOUT_S)
