"""The MCP Inspector CLI (another SDK, the TypeScript one) lists our tools and calls compare_checkpoints.

Needs node and npx (0.14.3 is the last Inspector that runs on Node 20); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _mcp_helpers import TOOLS, Workspace, server_env, server_script, starts, validate

INSPECTOR = "@modelcontextprotocol/inspector@0.14.3"
# npx may fetch the package on first use; later runs start from npm's cache in seconds.
NPX_TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def npx() -> str:
    found = shutil.which("npx")
    if found is None:
        pytest.skip("npx not found: install Node.js 20+ to run the MCP Inspector check")
    try:
        probe = subprocess.run([found, "-y", INSPECTOR, "--cli", "--help"], capture_output=True, text=True,
                               timeout=NPX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npx could not fetch {INSPECTOR} within {NPX_TIMEOUT_S} s (no network?)")
    if probe.returncode != 0:
        tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"npx could not run {INSPECTOR} (no network?): {tail[0]}")
    return found


def inspector(npx: str, ws: Workspace, run_dir: Path, *method: str) -> dict:
    env = server_env(run_dir / "cache", run_dir / "compute.log")
    env_args = [arg for key in ("MODELDELTA_CACHE_DIR", "MODELDELTA_COMPUTE_LOG", "HF_HUB_OFFLINE")
                for arg in ("-e", f"{key}={env[key]}")]
    cmd = [npx, "-y", INSPECTOR, "--cli", *env_args, server_script(), *ws.allow_args(), *method]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=NPX_TIMEOUT_S, cwd=run_dir)
    assert done.returncode == 0, f"{' '.join(method)}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_inspector_cli_lists_tools_and_calls_compare(npx: str, ws: Workspace, tmp_path: Path) -> None:
    listed = inspector(npx, ws, tmp_path, "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert sorted(tools) == sorted(TOOLS)
    assert all(t["outputSchema"]["type"] == "object" and t["annotations"]["readOnlyHint"] for t in tools.values())

    answer = inspector(npx, ws, tmp_path, "--method", "tools/call", "--tool-name", "compare_checkpoints",
                       "--tool-arg", f"model_a={ws.model_a}", "--tool-arg", f"model_b={ws.model_b}",
                       "--tool-arg", "spectrum=off")
    assert not answer.get("isError"), answer
    summary = answer["structuredContent"]
    validate("compare_checkpoints", summary)
    assert summary["top_modules"][0]["name"].startswith("encoder.layer.3.")
    text = answer["content"][0]["text"]  # the short Markdown rendering, naming the report's resources
    assert text.startswith("## modeldelta: ") and f"modeldelta://reports/{summary['report_id']}/html" in text
    assert starts(tmp_path / "compute.log", summary["report_id"]) == 1
