"""Run `modeldelta` command lines in one fresh process (as _core_clidriver.py), with the range reader's retry
wait shortened so that a persisting server error fails in well under a second instead of ~23 s.

Usage: python _hub_driver.py '[["org/a", "org/b", "-q"], ...]'
"""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from modeldelta_mcp import cli
from modeldelta_mcp.sources import remote


def main() -> None:
    remote.RETRY_BASE_WAIT_S = 0.01
    results = []
    for argv in json.loads(sys.argv[1]):
        r = CliRunner().invoke(cli.main_command, argv)
        results.append({"argv": argv, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                        "exception": None if r.exception is None or isinstance(r.exception, SystemExit)
                        else repr(r.exception)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
