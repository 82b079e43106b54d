"""The JSON report: the ComparisonReport model, indented."""

from __future__ import annotations

from modeldelta_mcp.models import ComparisonReport


def render_json(report: ComparisonReport) -> str:
    return report.model_dump_json(indent=2)
