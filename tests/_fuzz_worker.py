"""Fuzz worker: runs mutated cases through the public entry points, one JSON line per case on stdout.

Run by tests/test_fuzz_readers.py in a child process, so that a hang, a crash of native code or a memory
blow-up is seen from outside and pinned to its case: `python _fuzz_worker.py PLAN_JSON`.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
import warnings
from pathlib import Path

from _fuzz_mutate import KINDS, write_case

# What a user-facing error must be (the contract).
MAX_MESSAGE = 200


def exercise(case: Path, base_dir: Path, adapter: bool) -> None:
    """What a user does with a checkpoint: inspect it (headers), compare it, store the report."""
    from modeldelta_mcp.compare import compare, resolve_pair
    from modeldelta_mcp.engine import EngineOptions
    from modeldelta_mcp.inspection import inspect_checkpoint
    from modeldelta_mcp.models import ComparisonReport

    if not adapter:
        inspect_checkpoint(str(case)).model_dump_json()
    pair = resolve_pair(str(base_dir), str(case))
    report = compare(pair, EngineOptions(top_k=4))
    ComparisonReport.model_validate_json(report.model_dump_json())  # what the store writes and reads back


def message_problem(msg: str, case_dir: Path) -> str | None:
    if "\n" in msg or "\r" in msg:
        return "more than one line"
    if len(msg) > MAX_MESSAGE:
        return f"{len(msg)} characters"
    if str(case_dir) not in msg:
        return "does not name the file"
    return None


def main() -> None:
    plan = json.loads(sys.argv[1])
    seeds = {k: Path(v) for k, v in plan["seeds"].items()}
    case_dir = Path(plan["scratch"]) / "c"
    from modeldelta_mcp.errors import ModelDeltaError

    warnings.simplefilter("ignore")
    for kind, start, count in plan["runs"]:
        spec = KINDS[kind]
        base = seeds[spec.base or spec.seed]
        for i in range(start, start + count):
            _, how = write_case(seeds, kind, plan["seed"], i, case_dir)
            out = {"kind": kind, "i": i, "how": how[:200]}
            try:
                exercise(case_dir / spec.target if spec.by_file else case_dir, base,
                         adapter=spec.base is not None and not spec.by_file)
                out["outcome"] = "ok"
            except ModelDeltaError as exc:
                msg = str(exc)
                problem = message_problem(msg, case_dir)
                out.update(outcome="bad_message" if problem else "error", msg=msg[:400], problem=problem)
            except BaseException as exc:  # the campaign's finding: anything else escaped
                tb = traceback.extract_tb(exc.__traceback__)[-3:]
                where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb))
                out.update(outcome="exception", msg=f"{type(exc).__name__}: {str(exc)[:300]} at {where}")
            out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
