"""Renderings of a stored ComparisonReport: terminal text, JSON, Markdown, HTML.

One entry point for every surface (CLI `-o`, `modeldelta report`, MCP resources and tool text):
`render_report(report, fmt)`; `format_for_path` maps an output file's suffix to its format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport

ReportFormat = Literal["text", "json", "md", "html"]
SUFFIX_FORMATS: dict[str, ReportFormat] = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html",
                                           ".htm": "html", ".txt": "text"}


def format_for_path(path: str | Path) -> ReportFormat:
    suffix = Path(path).suffix.lower()
    fmt = SUFFIX_FORMATS.get(suffix)
    if fmt is None:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise ModelDeltaError(f"-o {path}: unknown output format {suffix or '(no suffix)'}; use one of {known}")
    return fmt


def render_report(report: ComparisonReport, fmt: ReportFormat, *, top_n: int = 20, color: bool = False) -> str:
    """The report in `fmt`. `top_n` bounds module tables (the HTML's full table is never cut); `color`
    only applies to the terminal text."""
    if fmt == "json":
        from modeldelta_mcp.render.json_report import render_json

        return render_json(report)
    if fmt == "text":
        from modeldelta_mcp.render.text import render_text

        return render_text(report, top_n=top_n, color=color)
    if fmt == "md":
        from modeldelta_mcp.render.markdown import render_markdown

        return render_markdown(report, top_n=top_n)
    if fmt == "html":
        from modeldelta_mcp.render.html import render_html

        return render_html(report, top_n=top_n)
    raise ModelDeltaError(f"unknown report format {fmt!r}; use text, json, md or html")
