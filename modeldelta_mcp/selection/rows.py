"""compare_many's ranking rows, cut from stored reports (pure functions, no I/O)."""

from __future__ import annotations

from typing import get_args

from modeldelta_mcp.diagnosis.diagnose import seed_set
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport, ManyRow, ManySortKey

# Roles listed per row: enough to tell "rewrote the head" from "moved attention", short enough for a table.
TOP_ROLES = 3
# Rows go from the candidate closest to the base to the farthest (relative change up, cosine down, profile
# from identical to extreme); O/Q highest first (the distillation hint); method and candidate alphabetical.
# A row without the value (an error) goes last.
DESCENDING = {"mean_cosine_sim", "oq"}
PROFILE_ORDER = ["identical", "surgical", "standard", "heavy", "extreme"]


def top_roles(report: ComparisonReport, n: int = TOP_ROLES) -> list[str]:
    """Roles by the mean relative change of their weight tensors (the seed's set), most changed first."""
    per: dict[str, list[float]] = {}
    for m in seed_set(report.modules):
        if m.name.endswith("weight") and not m.identical:
            per.setdefault(m.role, []).append(m.frob_norm_relative)
    ranked = sorted(per, key=lambda r: -sum(per[r]) / len(per[r]))
    return ranked[:n]


def oq_of(report: ComparisonReport) -> float | None:
    for f in report.diagnostics.findings:
        if f.code == "oq_ratio":
            value = f.evidence.get("oq")
            return float(value) if isinstance(value, int | float) else None
    return None


def row(candidate: str, report: ComparisonReport) -> ManyRow:
    d = report.diagnostics
    recipe = getattr(d, "recipe", None) or [d.method]
    return ManyRow(candidate=candidate, report_id=report.report_id, error=None, profile_tag=d.profile_tag,
                   method=d.method, recipe=list(recipe), mean_relative_change=report.totals.mean_relative_change,
                   mean_cosine_sim=report.totals.mean_cosine_sim, oq=oq_of(report), top_roles=top_roles(report))


def error_row(candidate: str, error: str) -> ManyRow:
    lines = error.strip().splitlines()
    return ManyRow(candidate=candidate, report_id=None, error=lines[0] if lines else "failed")


def sort_rows(rows: list[ManyRow], sort_by: str) -> list[ManyRow]:
    if sort_by not in get_args(ManySortKey):
        raise ModelDeltaError(f"sort_by {sort_by!r}: expected one of {', '.join(get_args(ManySortKey))}")
    with_value = [r for r in rows if getattr(r, sort_by) is not None]
    without = [r for r in rows if getattr(r, sort_by) is None]
    if sort_by == "profile_tag":
        key = lambda r: PROFILE_ORDER.index(r.profile_tag)  # noqa: E731
    elif sort_by in DESCENDING:
        key = lambda r: -getattr(r, sort_by)  # noqa: E731
    else:
        key = lambda r: getattr(r, sort_by)  # noqa: E731
    return sorted(with_value, key=key) + without
