"""The store under faults, with real processes: two processes on one store, kill -9 at several points, a store
that cannot be written, and `modeldelta store list|prune`.

Every process is the installed `modeldelta` CLI on the MiniLM pair (the same service the MCP server uses).
Kill points are the test hooks of modeldelta_mcp/testhooks.py: the process stops there and is killed.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _core_ckpt import console_script
from _mcp_helpers import Workspace, compute_events

from modeldelta_mcp.testhooks import PAUSE_AT_ENV, PAUSE_FILE_ENV, READ_PAUSE_AFTER

pytestmark = pytest.mark.timeout(600)

# Seconds slept per tensor (the service's test hook): a MiniLM comparison then lasts ~2 s, long enough for
# a second process to arrive while the first computes.
DELAY_S = "0.02"
WAIT_S = 300.0  # for a paused process to reach its point; generous on a shared machine, never asserted on


def _env(cache: Path, log: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PAUSE_AT_ENV, PAUSE_FILE_ENV)}
    env.update(MODELDELTA_CACHE_DIR=str(cache), MODELDELTA_COMPUTE_LOG=str(log), HF_HUB_OFFLINE="1",
               MODELDELTA_MCP_TEST_DELAY_S=DELAY_S, **extra)
    return env


def _compare(ws: Workspace, out: Path, env: dict[str, str], **popen: object) -> subprocess.Popen:
    return subprocess.Popen([*console_script(), "compare", str(ws.model_a), str(ws.model_b), "-q", "--top-k", "8",
                             "-o", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)  # type: ignore[call-overload]


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=WAIT_S)
    return proc.returncode, err


def _stable(path: Path) -> dict:
    """The report without what describes the run (timing, bytes read this time)."""
    data = json.loads(path.read_text())
    data.pop("engine")
    return data


@pytest.fixture(scope="module")
def reference(ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The report computed once, uninterrupted, in a store of its own."""
    run = tmp_path_factory.mktemp("reference")
    rc, err = _finish(_compare(ws, run / "ref.json", _env(run / "cache", run / "log")))
    assert rc == 0, err
    return _stable(run / "ref.json")


def test_two_processes_on_one_store_compute_once(ws: Workspace, tmp_path: Path, reference: dict) -> None:
    env = _env(tmp_path / "cache", tmp_path / "compute.log")
    procs = [_compare(ws, tmp_path / f"out{i}.json", env) for i in range(2)]
    for proc in procs:
        rc, err = _finish(proc)
        assert rc == 0, err
    events = compute_events(tmp_path / "compute.log")
    assert [e for _, e in events] == ["start", "done"], events  # one computed, the other waited and read it
    assert _stable(tmp_path / "out0.json") == _stable(tmp_path / "out1.json") == reference


def _journal_lines(cache: Path) -> list[str]:
    journals = list((cache / "journal").glob("*.jsonl"))
    assert len(journals) == 1, journals
    return journals[0].read_text().split("\n")[1:]


@pytest.mark.parametrize("point", ["read", "journal", "store"])
def test_kill_9_then_a_rerun_resumes_and_gives_the_same_report(point: str, ws: Workspace, tmp_path: Path,
                                                                reference: dict) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "paused"
    env = _env(cache, tmp_path / "compute.log", **{PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(marker)})
    proc = _compare(ws, tmp_path / "killed.json", env)
    deadline = time.monotonic() + WAIT_S
    while not marker.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.is_file(), f"never reached {point}: {proc.communicate(timeout=5)}"
    os.kill(proc.pid, signal.SIGKILL)  # it holds the entry's lock and, but for "store", a journal
    proc.wait()

    # What the killed process left is never trusted as a report.
    assert not list((cache / "reports").glob("*.json"))
    lines = _journal_lines(cache)
    complete = [line for line in lines if line.endswith("}") and line.startswith("{")]
    if point == "store":
        assert not [line for line in lines if line and line not in complete]
        assert list((cache / "reports").glob(".*.tmp")), "the half-stored report is a temp file, not an entry"
    else:
        assert len(complete) >= READ_PAUSE_AFTER
    if point == "journal":
        assert lines[-1] and lines[-1] not in complete, "killed with half a line written"

    # The rerun is not blocked by the dead process's lock, resumes from the journal, ends with the same report.
    rc, err = _finish(_compare(ws, tmp_path / "rerun.json", _env(cache, tmp_path / "compute.log")))
    assert rc == 0, err
    assert _stable(tmp_path / "rerun.json") == reference
    assert not list((cache / "journal").glob("*.jsonl")), "the journal goes once the report is stored"
    assert len(list((cache / "reports").glob("*.json"))) == 1


def _one_warning(err: str) -> None:
    lines = [line for line in err.splitlines() if "not writable" in line]
    assert len(lines) == 1, err
    assert "computing without storing" in lines[0] and "Traceback" not in err


def test_a_read_only_store_computes_without_storing(ws: Workspace, tmp_path: Path, reference: dict) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the store's parent is a file: every write there fails, for any user
    env = _env(blocker / "cache", tmp_path / "compute.log")
    rc, err = _finish(_compare(ws, tmp_path / "out.json", env))
    assert rc == 0, err
    _one_warning(err)
    assert _stable(tmp_path / "out.json") == reference
    if os.geteuid() != 0:  # root writes through permissions; a mode-0555 store only binds other users
        ro = tmp_path / "ro-cache"
        ro.mkdir(mode=0o555)
        rc, err = _finish(_compare(ws, tmp_path / "out-ro.json", _env(ro, tmp_path / "compute.log")))
        assert rc == 0, err
        _one_warning(err)


def _limit_file_size() -> None:
    # Files this process writes stop at 64 KB (EFBIG, a full disk as the process sees it); the report is larger.
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_full_store_computes_without_storing(ws: Workspace, tmp_path: Path) -> None:
    env = _env(tmp_path / "cache", tmp_path / "compute.log")
    proc = subprocess.run([*console_script(), "compare", str(ws.model_a), str(ws.model_b), "-q", "--top-k", "8"],
                          env=env, capture_output=True, text=True, timeout=WAIT_S, preexec_fn=_limit_file_size)
    assert proc.returncode == 0, proc.stderr
    _one_warning(proc.stderr)
    assert "encoder.layer.3" in proc.stdout  # the table of the most changed modules
    assert not list((tmp_path / "cache" / "reports").glob("*.json"))


def test_store_list_and_prune(ws: Workspace, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rc, err = _finish(_compare(ws, tmp_path / "out.json", _env(cache, tmp_path / "compute.log")))
    assert rc == 0, err
    listed = subprocess.run([*console_script(), "store", "list", "--cache-dir", str(cache)], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and str(ws.model_b) in listed.stdout and "1 reports" in listed.stderr
    kept = subprocess.run([*console_script(), "store", "prune", "--cache-dir", str(cache), "--older-than", "30d"],
                          capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0 and "removed 0 reports" in kept.stderr
    gone = subprocess.run([*console_script(), "store", "prune", "--cache-dir", str(cache), "--all"],
                          capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0 and "removed 1 reports" in gone.stderr
    assert not list((cache / "reports").glob("*.json"))
    refused = subprocess.run([*console_script(), "store", "prune", "--cache-dir", str(cache)], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "--older-than" in refused.stderr
