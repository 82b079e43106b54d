#!/usr/bin/env bash
# The performance budget: the default exact comparison of the 0.5B benchmark pair, alternating two source
# trees (e.g. a worktree of the commit before a change, and this checkout) so both see the same machine load.
# Usage: benchmarks/budget_check.sh OLD_TREE NEW_TREE [RUNS]   (pair: bench-data/qwen2.5-0.5B, make_pairs.py)
set -euo pipefail
# Absolute trees, and each run started from its temporary directory: python puts the working directory
# ahead of PYTHONPATH, so a run started in a checkout would import that checkout, whatever the tree.
old=$(cd "$1" && pwd) new=$(cd "$2" && pwd) runs=${3:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
a=$repo/bench-data/qwen2.5-0.5B/a b=$repo/bench-data/qwen2.5-0.5B/b
for i in $(seq "$runs"); do
  for tree in "$old" "$new"; do
    out=$(mktemp -d)
    (cd "$out" && PYTHONPATH=$tree MODELDELTA_CACHE_DIR=$out/cache /usr/bin/time -v -o "$out/time" \
      python -c "import sys, modeldelta_mcp; assert modeldelta_mcp.__file__.startswith(sys.argv[1]); \
sys.argv[1:] = sys.argv[2:]; from modeldelta_mcp.cli import main; main()" \
      "$tree" "$a" "$b" --no-cache -q -o "$out/r.json" 2>/dev/null)
    wall=$(grep "Elapsed (wall" "$out/time" | awk '{print $NF}')
    rss=$(grep "Maximum resident" "$out/time" | awk '{print $NF}')
    eng=$(python -c "import json,sys; print(round(json.load(open(sys.argv[1]))['engine']['seconds'], 2))" "$out/r.json")
    echo "$tree run$i wall=$wall peak_rss_kib=$rss engine_s=$eng"
    rm -rf "$out"
  done
done
