"""Markdown and HTML renderings of a compare_many answer: the ranking table and the candidates' plot."""

from __future__ import annotations

import pytest

from modeldelta_mcp.models import CompareManyAnswer, ManyEngineInfo, ManyRow
from modeldelta_mcp.render.many import render_many


def _row(name: str, change: float, oq: float | None, method: str = "full_finetune") -> ManyRow:
    return ManyRow(candidate=name, report_id="0123456789abcdef", error=None, profile_tag="standard", method=method,
                   recipe=[method], mean_relative_change=change, mean_cosine_sim=0.999, oq=oq,
                   top_roles=["attn_o", "mlp_down"])


@pytest.fixture
def answer() -> CompareManyAnswer:
    rows = [_row("org/close", 0.01, 1.1), _row("org/distilled", 0.03, 4.2), _row("./<b>odd</b>", 0.2, None),
            ManyRow(candidate="./broken", report_id=None, error="./broken/model.safetensors: truncated")]
    engine = ManyEngineInfo(executor="local", workers=1, tasks=1, retries=0, seconds=1.0, bytes_read=10**9,
                            base_reads=290, from_store=0)
    return CompareManyAnswer(base="org/base", sort_by="mean_relative_change", rows=rows, engine=engine)


def test_markdown_has_the_ranking_and_a_plot_of_the_placeable_candidates(answer: CompareManyAnswer) -> None:
    md = render_many(answer, "md")
    table = [line for line in md.split("```")[0].splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 4 and all(line.count(" | ") == table[0].count(" | ") for line in table)
    assert "`org/distilled`" in md and "4.2" in md and "error: ./broken/model.safetensors: truncated" in md
    grid = [line[1:] for line in md.split("```")[1].splitlines() if line.startswith("|")]
    # ranks 1 and 2 are placed (a relative change and an O/Q); 3 has no O/Q, 4 failed
    assert set("".join(grid)) == {" ", "-", "1", "2"}
    row_of = {ch: n for n, line in enumerate(grid) for ch in line if ch in "12"}
    assert row_of["2"] < row_of["1"], "the higher O/Q must sit higher"


def test_html_is_one_escaped_page_with_the_plot(answer: CompareManyAnswer) -> None:
    html = render_many(answer, "html")
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 1
    assert "&lt;b&gt;odd&lt;/b&gt;" in html and "<b>odd</b>" not in html
    assert "org/distilled" in html and "error: ./broken/model.safetensors: truncated" in html


def test_json_and_text_renderings(answer: CompareManyAnswer) -> None:
    assert CompareManyAnswer.model_validate_json(render_many(answer, "json")) == answer
    assert "| 4 | `./broken` |" in render_many(answer, "text")
