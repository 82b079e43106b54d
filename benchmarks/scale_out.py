"""Many candidates and the Ray executor on a benchmark pair: the figures of docs/scale-out.md.

    python benchmarks/scale_out.py --size 0.5B --copies 4 --workers 2

1. Four separate comparisons (`modeldelta compare A Ci --no-cache`, one after the other) against one
   `modeldelta many A C1 .. C4 --no-cache`. The candidates are hard links to the pair's B under other
   directory names: four distinct checkpoints to the tool (identity = path, size, mtime), the same bytes,
   so both runs do the same arithmetic and differ only in how often A is read and decoded.
2. One comparison in a single process against the same with `--executor ray` on a local Ray instance of
   --workers workers (start-up of the instance included: that is what a user pays on a laptop).

The page cache is warmed first (every file read once), each run gets a fresh result store, and wall/CPU
time come from /usr/bin/time -v (benchmarks/measure.py), with the load average before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.make_pairs import ensure_pair  # noqa: E402
from benchmarks.measure import measure, read_files  # noqa: E402
from benchmarks.qwen_shapes import SHAPES  # noqa: E402
from benchmarks.run_benchmarks import log, our_cli, weight_files  # noqa: E402


def candidates(b: Path, root: Path, n: int) -> list[Path]:
    """n hard-linked copies of checkpoint B (distinct directories, the same file pages)."""
    out = []
    for i in range(1, n + 1):
        c = root / f"c{i}"
        c.mkdir(parents=True, exist_ok=True)
        for f in b.iterdir():
            if f.is_file() and not (c / f.name).exists():
                os.link(f, c / f.name)
        out.append(c)
    return out


def run(label: str, cmd: list[str], env_extra: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="md-scale-cache-") as cache:
        env = dict(os.environ, MODELDELTA_CACHE_DIR=cache, **(env_extra or {}))
        log(f"{label}: {' '.join(cmd)}")
        m = measure(cmd, env)
    log(f"{label}: wall {m.wall_s:.1f} s, cpu {m.cpu_s:.1f} s, peak RSS {m.peak_rss_mb:.0f} MB, "
        f"load {m.load_before:.1f}->{m.load_after:.1f}" + ("" if m.returncode == 0 else f"  FAILED: {m.stderr_tail}"))
    if m.returncode != 0:
        raise SystemExit(f"{label} failed")
    return {"label": label, "cmd": " ".join(cmd), **asdict(m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="0.5B", choices=sorted(SHAPES))
    ap.add_argument("--data-dir", type=Path, default=REPO / "bench-data")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spectrum", default="exact", choices=["exact", "fast", "off"])
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = ap.parse_args()
    a, b = ensure_pair(args.data_dir, SHAPES[args.size], log=log)
    cands = candidates(b, args.data_dir / f"{SHAPES[args.size].label}-candidates", args.copies)
    read_files([*weight_files(a), *weight_files(b)])
    cli = our_cli()
    results: dict = {"size": args.size, "spectrum": args.spectrum,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                     "separate": [], "many": None, "single": None, "ray": None}
    with tempfile.TemporaryDirectory(prefix="md-scale-out-") as tmp:
        for i, c in enumerate(cands, 1):
            results["separate"].append(run(f"separate {i}", [*cli, "compare", str(a), str(c), "--no-cache", "-q",
                                                             "--spectrum", args.spectrum, "-o", f"{tmp}/sep{i}.json"]))
        results["many"] = run("many", [*cli, "many", str(a), *map(str, cands), "--no-cache", "-q",
                                       "--spectrum", args.spectrum, "-o", f"{tmp}/many.json"])
        many = json.loads(Path(f"{tmp}/many.json").read_text())
        results["many_engine"] = many["engine"]
        if not args.skip_ray:
            results["single"] = run("single process", [*cli, "compare", str(a), str(b), "--no-cache", "-q",
                                                       "-o", f"{tmp}/single.json"])
            results["ray"] = run(f"ray, {args.workers} workers", [*cli, "compare", str(a), str(b), "--no-cache",
                                                                  "-q", "-o", f"{tmp}/ray.json", "--executor", "ray",
                                                                  "--ray-workers", str(args.workers)])
            results["ray_engine"] = json.loads(Path(f"{tmp}/ray.json").read_text())["engine"]
    sep = sum(r["wall_s"] for r in results["separate"])
    sep_cpu = sum(r["cpu_s"] for r in results["separate"])
    log(f"{args.copies} separate: {sep:.1f} s wall, {sep_cpu:.1f} s CPU; many: {results['many']['wall_s']:.1f} s wall, "
        f"{results['many']['cpu_s']:.1f} s CPU")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
