"""schemas/ is generated from models.py: a checked-in file that drifts from the models fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from modeldelta_mcp.schemas import DEFAULT_DIR, DIALECT, SCHEMAS, drift, file_name, main, write

REPO = Path(__file__).resolve().parent.parent


def test_checked_in_schemas_match_the_models() -> None:
    assert DEFAULT_DIR == REPO / "schemas"
    stale = drift(REPO / "schemas")
    assert not stale, f"schemas/ drifted from models.py: {stale}; run python -m modeldelta_mcp.schemas"
    expected = {file_name(n) for n in SCHEMAS}
    assert {p.name for p in (REPO / "schemas").glob("*.schema.json")} == expected


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    for name in SCHEMAS:
        schema = json.loads((REPO / "schemas" / file_name(name)).read_text())
        assert schema["$schema"] == DIALECT
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False


def test_the_check_command_detects_drift(tmp_path: Path) -> None:
    write(tmp_path)
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    target = tmp_path / file_name("get_diagnosis")
    target.write_text(target.read_text().replace('"report_id"', '"reportId"'))
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert drift(tmp_path) == [file_name("get_diagnosis")]


def test_the_generator_is_one_command(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "modeldelta_mcp.schemas", "--dir", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert len(done.stdout.splitlines()) == len(SCHEMAS)
    assert drift(tmp_path) == []
