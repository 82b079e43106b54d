#!/usr/bin/env bash
# The performance budget: the default exact comparison of the 0.5B benchmark pair, alternating two source
# trees (e.g. a worktree of the commit before a change, and this checkout) so both see the same machine load.
# Usage: benchmarks/budget_check.sh OLD_TREE NEW_TREE [RUNS]   (pair: bench-data/qwen2.5-0.5B, make_pairs.py)
set -euo pipefail
old=$1 new=$2 runs=${3:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
a=$repo/bench-data/qwen2.5-0.5B/a b=$repo/bench-data/qwen2.5-0.5B/b
for i in $(seq "$runs"); do
  for tree in "$old" "$new"; do
    out=$(mktemp -d)
    PYTHONPATH=$tree MODELDELTA_CACHE_DIR=$out/cache /usr/bin/time -v -o "$out/time" \
      python -c "import sys; from modeldelta_mcp.cli import main; sys.argv[1:] = sys.argv[1:]; main()" \
      "$a" "$b" --no-cache -q -o "$out/r.json" 2>/dev/null
    wall=$(grep "Elapsed (wall" "$out/time" | awk '{print $NF}')
    rss=$(grep "Maximum resident" "$out/time" | awk '{print $NF}')
    eng=$(python -c "import json,sys; print(round(json.load(open(sys.argv[1]))['engine']['seconds'], 2))" "$out/r.json")
    echo "$tree run$i wall=$wall peak_rss_kib=$rss engine_s=$eng"
    rm -rf "$out"
  done
done
