"""Run a command and measure wall time, CPU time and peak resident memory of its process tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

TIME_BIN = "/usr/bin/time"
# psutil fallback: the tree is sampled this often (a peak shorter than this can be missed).
POLL_SECONDS = 0.05


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    method: str
    load_before: float
    load_after: float
    stderr_tail: str


def _gnu_time(cmd: list[str], env: dict[str, str]) -> Measurement:
    load0 = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        proc = subprocess.run([TIME_BIN, "-v", "-o", out.name, *cmd], env=env, capture_output=True, text=True)
        text = Path(out.name).read_text()

    def field(label: str) -> str:
        m = re.search(rf"{re.escape(label)}: (.+)", text)
        return m.group(1).strip() if m else "0"

    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    rss = float(field("Maximum resident set size (kbytes)")) / 1024
    return Measurement(wall, cpu, rss, proc.returncode, "/usr/bin/time -v", load0, os.getloadavg()[0],
                       proc.stderr[-2000:])


def _psutil(cmd: list[str], env: dict[str, str]) -> Measurement:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    cpu_seen: dict[int, float] = {}
    while proc.poll() is None:
        rss = 0
        try:
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu_seen[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, rss)
        time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read() if proc.stderr else ""
    usage = os.times()
    cpu = max(sum(cpu_seen.values()), usage.children_user + usage.children_system)
    return Measurement(wall, cpu, peak / 1024**2, proc.returncode, "psutil polling", load0, os.getloadavg()[0],
                       stderr[-2000:])


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Measurement:
    env = dict(os.environ if env is None else env)
    if shutil.which(TIME_BIN) or Path(TIME_BIN).exists():
        return _gnu_time(cmd, env)
    return _psutil(cmd, env)


def read_files(paths: list[Path], evict_first: bool = False) -> tuple[int, float]:
    """Read the files through (bytes, seconds). evict_first drops their pages from the page cache first
    (posix_fadvise DONTNEED: only these files' clean pages), which measures the disk, not memory."""
    total = 0
    if evict_first:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    buf = bytearray(16 * 1024**2)
    view = memoryview(buf)
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total, time.perf_counter() - t0
