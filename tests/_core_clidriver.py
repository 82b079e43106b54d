"""Run several `modeldelta` command lines in one fresh process and print their results as JSON.

huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE when it is imported, so each environment
needs its own process; within one environment this saves the interpreter and torch start-up per command.
Usage: python _core_clidriver.py '[["org/a", "org/b", "-q"], ["inspect", "org/a"]]'
"""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from modeldelta_mcp.cli import main_command


def main() -> None:
    results = []
    for argv in json.loads(sys.argv[1]):
        r = CliRunner().invoke(main_command, argv)
        results.append({"argv": argv, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
