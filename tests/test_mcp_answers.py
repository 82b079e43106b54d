"""Tool answers cut from a report: compact enough for a 7B pair, sorted as documented, valid against schemas/."""

from __future__ import annotations

import re

import pytest
from _mcp_helpers import validate
from _mcp_synthetic import LAYERS, build_7b_shaped_pair

from modeldelta_mcp import answers
from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.models import ComparisonReport, Finding


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ComparisonReport:
    a, b = build_7b_shaped_pair(tmp_path_factory.mktemp("7b-shaped"))
    return compare(resolve_pair(str(a), str(b)), EngineOptions())


def test_the_summary_of_a_7b_shaped_pair_is_compact(report: ComparisonReport) -> None:
    assert report.n_tensors == 291 and len(report.checkpoints.a.files) == 2
    s = answers.summary(report)
    size = len(s.model_dump_json())
    assert size < answers.SUMMARY_BUDGET_BYTES, f"compare_checkpoints summary is {size} bytes"
    assert len(s.top_modules) == answers.SUMMARY_TOP_MODULES
    assert s.report_uri == f"modeldelta://reports/{report.report_id}"
    assert s.counts.n_tensors == 291 and s.counts.n_changed + s.counts.n_identical == 291
    validate("compare_checkpoints", s.model_dump(mode="json"))
    validate("report", report.model_dump(mode="json"))


def test_an_over_budget_summary_trims_evidence_lists_and_says_so(report: ComparisonReport) -> None:
    long = Finding(code="outliers", category="outliers", severity="info", title="t", detail="d",
                   evidence={"modules": [f"model.layers.{i}.mlp.down_proj.weight" for i in range(400)], "n": 1})
    bloated = report.model_copy(update={"diagnostics": report.diagnostics.model_copy(
        update={"findings": [*report.diagnostics.findings, long]})})
    s = answers.summary(bloated)
    trimmed = s.diagnostics.findings[-1].evidence
    assert len(trimmed["modules"]) == answers.TRIMMED_EVIDENCE_ITEMS and trimmed["modules_total"] == 400
    assert trimmed["n"] == 1
    assert len(s.model_dump_json()) < answers.SUMMARY_BUDGET_BYTES
    # get_diagnosis keeps the full evidence.
    assert len(answers.diagnosis(bloated).diagnostics.findings[-1].evidence["modules"]) == 400


def test_a_summary_still_over_budget_drops_the_evidence(report: ComparisonReport) -> None:
    huge = Finding(code="outliers", category="outliers", severity="info", title="t", detail="d",
                   evidence={f"k{i}": i for i in range(2000)})
    bloated = report.model_copy(update={"diagnostics": report.diagnostics.model_copy(
        update={"findings": [*report.diagnostics.findings, huge]})})
    s = answers.summary(bloated)
    assert len(s.model_dump_json()) < answers.SUMMARY_BUDGET_BYTES
    assert [f.code for f in s.diagnostics.findings] == [f.code for f in bloated.diagnostics.findings]
    assert s.diagnostics.findings[-1].evidence == {"omitted": "see get_diagnosis"}


@pytest.mark.parametrize("sort_by", ["frob_norm_relative", "cosine_sim", "effective_rank", "sparsity"])
def test_top_modules_are_ranked_most_changed_first(report: ComparisonReport, sort_by: str) -> None:
    top = answers.top_modules(report, 30, sort_by, None)
    values = [getattr(m, sort_by) for m in top.modules]
    assert len(values) == 30
    assert values == sorted(values, reverse=sort_by not in answers.ASCENDING)
    validate("top_changed_modules", top.model_dump(mode="json"))


def test_top_modules_leave_out_forensics_unless_asked(report: ComparisonReport) -> None:
    lean = answers.top_modules(report, 20, "frob_norm_relative", None)
    assert all(m.forensics.model_dump() == {} for m in lean.modules)
    assert len(lean.model_dump_json()) < 20 * 1024
    full = answers.top_modules(report, 20, "frob_norm_relative", None, include_forensics=True)
    assert all(m.forensics.model_dump() for m in full.modules if not m.identical)


def test_top_modules_role_filter_and_unknown_sort_key(report: ComparisonReport) -> None:
    top = answers.top_modules(report, 100, "frob_norm_relative", "attn_o")
    assert len(top.modules) == LAYERS and {m.role for m in top.modules} == {"attn_o"}
    assert top.role == "attn_o"
    with pytest.raises(ValueError, match="sort_by"):
        answers.top_modules(report, 5, "name", None)


def test_layer_profile_has_every_layer_and_shows_the_frozen_ones(report: ComparisonReport) -> None:
    prof = answers.layer_profile(report)
    assert [r.layer for r in prof.layers] == list(range(LAYERS))
    assert {"attn_q", "attn_o", "mlp_down"} <= set(prof.roles)
    assert prof.layers[0].roles["attn_q"].frob_norm_relative == 0
    assert prof.layers[5].roles["attn_q"].frob_norm_relative > 0
    validate("layer_profile", prof.model_dump(mode="json"))
    text = answers.layer_profile_text(prof)
    assert len([line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]) == LAYERS


def test_text_renderings_are_short_and_name_the_report(report: ComparisonReport) -> None:
    s = answers.summary(report)
    for text in (answers.summary_text(s), answers.diagnosis_text(answers.diagnosis(report)),
                 answers.top_modules_text(answers.top_modules(report, 5, "frob_norm_relative", None))):
        assert report.report_id in text and len(text) < 3000

