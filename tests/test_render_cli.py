"""`modeldelta report SOURCE -o FILE` and `modeldelta A B -o report.html|.md`: renderings from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _render_pairs import lora_frozen_pair
from click.testing import CliRunner

from modeldelta_mcp.cli import main_command
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.store import ResultStore


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return lora_frozen_pair(tmp_path / "pair", layers=3)


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main_command, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_compare_writes_html_and_markdown_then_report_rerenders_without_recomputing(
        pair: tuple[Path, Path], tmp_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    html, md, js = tmp_path / "out" / "r.html", tmp_path / "r.md", tmp_path / "r.json"
    code, _, err = _run(str(a), str(b), "-o", str(html))
    assert code == 0, err
    assert html.read_text().startswith("<!DOCTYPE html>") and "HTML report saved to" in err
    assert _run(str(a), str(b), "-q", "-o", str(js))[0] == 0
    report = ComparisonReport.model_validate_json(js.read_text())
    assert ResultStore(tmp_cache).get(report.report_id) is not None

    log = tmp_path / "computations.log"
    monkeypatch.setenv("MODELDELTA_COMPUTE_LOG", str(log))
    code, _, err = _run("report", report.report_id, "-o", str(md), "--top-n", "3")
    assert code == 0, err
    text = md.read_text()
    assert text.startswith("# modeldelta: ") and "`lora_merge`" in text and "`frozen_modules`" in text
    assert len([line for line in text.splitlines() if line.startswith("| `")]) == 3
    code, out, err = _run("report", str(js))
    assert code == 0, err
    assert "─── Diagnosis ───" in out and "Method: lora_merge — " in out and "\x1b[" not in out
    code, _, err = _run("report", str(js), "-q", "-o", str(tmp_path / "again.html"))
    assert code == 0 and err == ""
    assert (tmp_path / "again.html").read_text() == html.read_text()
    assert not log.exists(), "rendering a stored report must not compare anything"


@pytest.mark.parametrize(("source", "message"), [
    ("0123456789abcdef", "report 0123456789abcdef: not in the result store at "),
    ("nothing-here", "nothing-here: neither a report.json file nor a report id (16 hex characters)"),
])
def test_report_sources_that_do_not_exist(source: str, message: str, tmp_cache: Path) -> None:
    code, _, err = _run("report", source)
    assert code == 1 and err.startswith(f"Error: {message}") and len(err.strip().splitlines()) == 1


def test_report_refuses_a_file_that_is_not_a_report(tmp_path: Path, tmp_cache: Path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"hello": "world"}))
    code, _, err = _run("report", str(bad), "-o", str(tmp_path / "x.html"))
    assert code == 1 and err.startswith(f"Error: {bad}: not a modeldelta report (") and "Traceback" not in err
    code, _, err = _run("report", str(bad), "-o", str(tmp_path / "x.pdf"))
    assert code == 1 and "unknown output format .pdf" in err
    assert not (tmp_path / "x.html").exists()
