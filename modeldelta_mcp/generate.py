"""The command line shared by the modules that generate checked-in files from the code (schemas, contracts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

# (what drifted, or None when nothing did; the line printed when nothing did) for the target path.
Check = Callable[[Path], tuple[str | None, str]]


def generator_main(module: str, doc: str, option: str, default: Path, what: str, check: Check,
                   write: Callable[[Path], list[Path]], argv: list[str] | None) -> int:
    """`python -m MODULE [--check] [--OPTION PATH]`: rewrite the generated files, or with --check exit 1 on drift."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on drift")
    parser.add_argument(f"--{option}", type=Path, default=default, help=f"{what} (default {default})")
    args = parser.parse_args(argv)
    target: Path = getattr(args, option)
    if args.check:
        drifted, fine = check(target)
        if drifted:
            print(f"{drifted}; run python -m {module}", file=sys.stderr)
            return 1
        print(fine)
        return 0
    for path in write(target):
        print(path)
    return 0
