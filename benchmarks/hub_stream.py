"""Bytes fetched and time: an `--include` (q/o projections) run against a full run, on a pair served by the
local stand-in hub (tests/_core_fakehub.py).

    python -m benchmarks.hub_stream bench-data/qwen2.5-0.5B [--full-too] [--stream-all]

The pair's a/ and b/ directories are served as org/a and org/b; each run is the `modeldelta` CLI in a fresh
process with HF_ENDPOINT at the stand-in hub and an empty HF_HOME, so nothing is cached between runs. The
bytes are counted at the server (body bytes of every file response).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QO = ["--include", "*.self_attn.q_proj.*", "--include", "*.self_attn.o_proj.*"]


def _run(hub_url: str, home: Path, args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": str(home / "hf"), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0", "MODELDELTA_CACHE_DIR": str(home / "store"),
           "PYTHONPATH": str(ROOT)}
    out = home / "report.json"
    t0 = time.perf_counter()
    # /usr/bin/time reports the CLI's own peak RSS: a wait4 from here would count the pages this process
    # (holding the served pair) shares with the child before it execs.
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb %M", sys.executable, "-m", "modeldelta_mcp.cli",
                           "org/a", "org/b", "-q", "--no-cache", "-o", str(out), *args],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    report = json.loads(out.read_text())
    rss = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("maxrss_kb ")]
    report["peak_rss_mb"] = round(int(rss[-1]) / 1024) if rss else None
    return seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pair", type=Path, help="a directory holding a/ and b/ (benchmarks/make_pairs.py)")
    parser.add_argument("--full-too", action="store_true", help="also time the full run (downloads the pair)")
    parser.add_argument("--stream-all", action="store_true", help="also stream every tensor (--include '*')")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from _core_fakehub import FakeHub, files_from_dir

    runs = [("include q/o (streamed)", QO)] + ([("full (downloaded)", [])] if args.full_too else [])
    runs += [("every tensor (streamed)", ["--include", "*"])] if args.stream_all else []
    with FakeHub() as hub:
        for side in ("a", "b"):
            hub.add_repo(f"org/{side}", {"main": files_from_dir(args.pair / side)})
        for label, extra in runs:
            hub.reset_counts()
            with tempfile.TemporaryDirectory(prefix="modeldelta-hubbench-") as tmp:
                seconds, report = _run(hub.url, Path(tmp), extra)
            print(json.dumps({"run": label, "args": extra, "seconds": round(seconds, 1),
                              "bytes_served": hub.bytes_served, "bytes_read": report["engine"]["bytes_read"],
                              "n_tensors": report["n_tensors"], "engine_seconds": round(report["engine"]["seconds"], 1),
                              "peak_rss_mb": report["peak_rss_mb"], "method": report["diagnostics"]["method"]}))


if __name__ == "__main__":
    main()
