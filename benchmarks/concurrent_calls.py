"""Peak memory of one MCP server under many concurrent distinct calls (issue: 16 calls on the 0.5B pair).

    python benchmarks/concurrent_calls.py bench-data/qwen2.5-0.5B/a bench-data/qwen2.5-0.5B/b --calls 16

Starts `modeldelta-mcp` on Streamable HTTP (default --max-concurrent unless given), sends `--calls`
compare_checkpoints calls at once (top_k 1..N, so every call is a distinct comparison), samples the server's
RSS with psutil, and prints calls held at once, the most computing at once (from the server's compute log),
the peak RSS and the wall time. Needs psutil (the `bench` or `test` extra).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
import psutil
from mcp import Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not listen")


def _most_at_once(log: Path) -> int:
    running = most = 0
    for line in log.read_text().splitlines():
        running += 1 if line.split()[1] == "start" else -1
        most = max(most, running)
    return most


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_a")
    p.add_argument("model_b")
    p.add_argument("--calls", type=int, default=16)
    p.add_argument("--max-concurrent", type=int, default=None, help="default: the server's own default")
    p.add_argument("--spectrum", default="exact", choices=["exact", "fast", "off"])
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="md-concurrent-"))
    log = work / "compute.log"
    port = _free_port()
    script = Path(sys.executable).parent / "modeldelta-mcp"
    cmd = [str(script), "--transport", "streamable-http", "--port", str(port), "--cache-dir", str(work / "cache"),
           "--allow-path", str(Path(args.model_a).resolve().parent.parent)]
    if args.max_concurrent:
        cmd += ["--max-concurrent", str(args.max_concurrent)]
    env = {**os.environ, "MODELDELTA_COMPUTE_LOG": str(log), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        proc = psutil.Process(server.pid)
        while not stop.is_set():
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.Error:
                return
            stop.wait(0.05)

    queued = 0

    async def run() -> None:
        nonlocal queued
        async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=7200) as client:
            async def one(k: int) -> None:
                nonlocal queued
                seen = False

                async def on_progress(done: float, total: float | None, message: str | None) -> None:
                    nonlocal seen
                    seen = seen or bool(message and message.startswith("queued"))

                result = await client.call_tool("compare_checkpoints", {
                    "model_a": str(Path(args.model_a).resolve()), "model_b": str(Path(args.model_b).resolve()),
                    "top_k": k, "spectrum": args.spectrum}, read_timeout_seconds=7200, progress_callback=on_progress)
                assert not result.is_error, result.content
                queued += seen

            async with anyio.create_task_group() as tg:
                for k in range(1, args.calls + 1):
                    tg.start_soon(one, k)

    try:
        _wait_listening(port, server)
        idle = psutil.Process(server.pid).memory_info().rss
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        anyio.run(run)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{args.calls} distinct calls held at once ({queued} told 'queued'), at most {_most_at_once(log)} "
          f"computing at once, --max-concurrent {args.max_concurrent or 'default'}, spectrum {args.spectrum}: "
          f"server RSS idle {idle / 1024**2:.0f} MB, peak {peak / 1024**2:.0f} MB, {wall:.0f} s")


if __name__ == "__main__":
    main()
