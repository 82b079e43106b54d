"""docs/contracts.md is generated from the code: a checked-in file that drifts from it fails here."""

from __future__ import annotations

from pathlib import Path

from modeldelta_mcp.contracts import DEFAULT_PATH, drifted, main, render
from modeldelta_mcp.diagnosis.codes import BY_CODE, FINDING_CODES, unregistered
from modeldelta_mcp.diagnosis.fingerprints import DETECTORS, PRECEDENCE
from modeldelta_mcp.server import build_server

REPO = Path(__file__).resolve().parent.parent


def test_checked_in_contracts_match_the_code() -> None:
    assert DEFAULT_PATH == REPO / "docs" / "contracts.md"
    assert not drifted(DEFAULT_PATH), "docs/contracts.md drifted from the code; run python -m modeldelta_mcp.contracts"


def test_the_check_command_detects_drift(tmp_path: Path) -> None:
    target = tmp_path / "contracts.md"
    assert main(["--path", str(target)]) == 0
    assert main(["--check", "--path", str(target)]) == 0
    target.write_text(target.read_text().replace("`get_diagnosis`", "`getDiagnosis`"))
    assert main(["--check", "--path", str(target)]) == 1


def test_every_tool_code_and_precedence_entry_is_in_the_document() -> None:
    text = render()
    for name in build_server().tool_arguments:
        assert f"### `{name}`" in text
    for code in [*DETECTORS, *PRECEDENCE]:
        assert code in BY_CODE and BY_CODE[code].category == "method", code
        assert f"| `{code}` | method |" in text
    assert len(BY_CODE) == len(FINDING_CODES), "a finding code is registered twice"


def test_the_registry_refuses_unknown_codes_and_evidence_keys() -> None:
    assert unregistered("lora_merge", "method", ["rank", "roles"]) is None
    assert "not in diagnosis/codes.py" in (unregistered("lora_merged", "method", []) or "")
    assert "category" in (unregistered("lora_merge", "structure", []) or "")
    assert "['rnak']" in (unregistered("lora_merge", "method", ["rank", "rnak"]) or "")
