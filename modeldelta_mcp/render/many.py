"""Renderings of a compare_many answer: the ranking table and one plot placing every candidate by its mean
relative change (how far from the base) and its O/Q ratio (the attention-output-over-query hint of
distillation), in the formats of a report (text, JSON, Markdown, HTML)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from markupsafe import Markup

from modeldelta_mcp import __version__, answers
from modeldelta_mcp.diagnosis.fingerprints.oq import OQ_NOTABLE
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import CompareManyAnswer
from modeldelta_mcp.render import ReportFormat
from modeldelta_mcp.render.derive import fmt_num
from modeldelta_mcp.render.markdown import cell, code, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The Markdown plot: a character grid (Markdown has no images that every reader shows).
GRID_WIDTH, GRID_HEIGHT = 60, 14


@dataclass(frozen=True)
class _Point:
    rank: int
    candidate: str
    change: float  # mean relative change, > 0
    oq: float


def _plotted(answer: CompareManyAnswer) -> list[_Point]:
    """The rows the plot can place: compared, a relative change above 0 and a finite O/Q."""
    return [_Point(n, r.candidate, r.mean_relative_change, r.oq) for n, r in enumerate(answer.rows, 1)
            if r.error is None and r.mean_relative_change and r.mean_relative_change > 0
            and r.oq is not None and math.isfinite(r.oq)]


def _table_rows(answer: CompareManyAnswer) -> list[list[str]]:
    out = []
    for n, r in enumerate(answer.rows, 1):
        if r.error is not None:
            out.append([str(n), code(r.candidate), "—", "—", "—", "—", "—", "—", cell(f"error: {r.error}")])
            continue
        out.append([str(n), code(r.candidate), r.profile_tag or "—", code(r.method or "—"),
                    fmt_num(r.mean_relative_change, 4), fmt_num(r.mean_cosine_sim, 6), fmt_num(r.oq, 3),
                    cell(", ".join(r.top_roles) or "—"), code(r.report_id or "—")])
    return out


HEADER = ["#", "candidate", "profile", "method", "mean ΔW/W", "mean cosine", "O/Q", "most changed roles", "report_id"]


def _grid(answer: CompareManyAnswer) -> list[str]:
    """Candidates as their rank numbers on a log(relative change) × O/Q character grid."""
    pts = _plotted(answer)
    if not pts:
        return ["(no candidate has both a relative change and an O/Q ratio to plot)"]
    xs = [math.log10(p.change) for p in pts]
    ys = [p.oq for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(min(ys), 0.0), max(max(ys), OQ_NOTABLE * 1.1)
    grid = [[" "] * GRID_WIDTH for _ in range(GRID_HEIGHT)]
    line = GRID_HEIGHT - 1 - round((OQ_NOTABLE - y0) / (y1 - y0) * (GRID_HEIGHT - 1))
    for c in range(GRID_WIDTH):
        grid[line][c] = "-"
    for p, x, y in zip(pts, xs, ys, strict=True):
        col = round((x - x0) / (x1 - x0) * (GRID_WIDTH - 3)) if x1 > x0 else GRID_WIDTH // 2
        row = GRID_HEIGHT - 1 - round((y - y0) / (y1 - y0) * (GRID_HEIGHT - 1))
        for k, ch in enumerate(str(p.rank)):
            if col + k < GRID_WIDTH:
                grid[row][col + k] = ch
    out = [f"O/Q {y1:.2f}"] + ["|" + "".join(r) for r in grid] + ["+" + "-" * GRID_WIDTH]
    out.append(f"O/Q {y0:.2f} at the axis; mean relative change (log) from {10 ** x0:.3g} to {10 ** x1:.3g}; "
               f"dashes: O/Q = {OQ_NOTABLE}")
    return out


def render_many_markdown(answer: CompareManyAnswer) -> str:
    e = answer.engine
    ok = sum(1 for r in answer.rows if r.error is None)
    lines = [f"# {len(answer.rows)} candidates against {code(answer.base)}", "",
             f"{ok} compared, ranked by `{answer.sort_by}`; {e.from_store} from the store, "
             f"{e.bytes_read / 1e6:,.0f} MB read in {e.seconds:.1f} s ({e.executor}, {e.workers} worker(s)).", "",
             *table(HEADER, _table_rows(answer), "rlllrrrll"), "",
             "## Candidates by relative change and O/Q", "",
             "Each candidate is its rank number; O/Q above 2 is the hint of reasoning distillation in the O/Q "
             "paper's table (a heuristic with known misses).", "", "```", *_grid(answer), "```", ""]
    return "\n".join(lines)


def many_plot_svg(answer: CompareManyAnswer) -> str | None:
    """The candidates placed by relative change (log) and O/Q, as inline SVG (render/plots.py's style)."""
    # plots.py's drawing helpers and lock: the same style, and rcParams are process-wide.
    from modeldelta_mcp.render.plots import (
        _RC_LOCK,
        ACCENT,
        ALERT,
        GRID,
        INK,
        MUTED,
        WIDTH_IN,
        _draw,
        _figure,
        _plain_log_axis,
    )

    pts = _plotted(answer)
    if not pts:
        return None

    def build() -> Figure:
        fig = _figure(WIDTH_IN * 0.75, 4.2)
        ax = fig.add_subplot()
        xs = [p.change for p in pts]
        ys = [p.oq for p in pts]
        ax.scatter(xs, ys, s=36, color=ACCENT, zorder=3)
        for p in pts:
            ax.annotate(f"{p.rank}. {Path(p.candidate).name or p.candidate}", (p.change, p.oq), xytext=(5, 4),
                        textcoords="offset points", fontsize=8, color=INK)
        ax.axhline(OQ_NOTABLE, color=ALERT, linestyle="--", linewidth=0.8)
        ax.text(0.99, OQ_NOTABLE, " O/Q 2: distillation hint", transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize=8, color=ALERT)
        ax.set_xscale("log")
        ax.margins(x=0.12)  # room for the labels right of the outermost points
        _plain_log_axis(ax.xaxis)
        ax.set_ylim(bottom=min(0.0, min(ys)), top=max(OQ_NOTABLE * 1.2, max(ys) * 1.15))
        ax.set_xlabel("mean relative change ‖ΔW‖/‖W‖ (log)")
        ax.set_ylabel("O/Q ratio", color=MUTED)
        ax.grid(True, color=GRID, linewidth=0.6)
        return fig

    with _RC_LOCK:
        return _draw("many-candidates", build)


def render_many_html(answer: CompareManyAnswer) -> str:
    from modeldelta_mcp.render.html import TEMPLATES, _environment

    svg = many_plot_svg(answer)
    template = _environment().get_template("many.html.j2")
    return template.render(a=answer, rows=list(enumerate(answer.rows, 1)), fmt_num=fmt_num, version=__version__,
                           plot=Markup(svg) if svg else None,  # matplotlib's SVG escapes its own text
                           css=Markup((TEMPLATES / "report.css").read_text(encoding="utf-8")))


def render_many(answer: CompareManyAnswer, fmt: ReportFormat) -> str:
    if fmt == "json":
        return answer.model_dump_json(indent=1)
    if fmt == "text":
        return answers.compare_many_text(answer)
    if fmt == "md":
        return render_many_markdown(answer)
    if fmt == "html":
        return render_many_html(answer)
    raise ModelDeltaError(f"unknown format {fmt!r}; use text, json, md or html")
