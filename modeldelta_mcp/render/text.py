"""The terminal rendering: the seed's header, module table and diagnosis, plus the method on one line.

Columns are sized to the longest module name shown, so any naming scheme stays aligned. ANSI colour only
when `color` is set (the CLI sets it for a TTY without NO_COLOR).
"""

from __future__ import annotations

from collections.abc import Callable

import click

from modeldelta_mcp.models import ComparisonReport, Diagnostics, ModuleDelta
from modeldelta_mcp.render.derive import profile_modules
from modeldelta_mcp.render.evidence import method_line

ICONS = {"info": "•", "notable": "▸", "warning": "⚠"}
SEVERITY_COLORS = {"info": "cyan", "notable": "yellow", "warning": "red"}
PROFILE_COLORS = {"identical": "white", "surgical": "green", "standard": "cyan", "heavy": "yellow",
                  "extreme": "red"}
# (header, width, cell) for the numeric columns; the seed's columns and their precision.
Column = tuple[str, int, Callable[[ModuleDelta], str]]
COLUMNS: list[Column] = [
    ("ΔW/W", 8, lambda m: f"{m.frob_norm_relative:.4f}"),
    ("cos_sim", 8, lambda m: f"{min(1.0, m.cosine_sim):.5f}"),
    ("eff_rank", 9, lambda m: f"{m.effective_rank:.0f}" if m.has_svd and m.effective_rank else "—"),
    ("conc", 7, lambda m: f"{m.concentration_top_k:.3f}" if m.has_svd and m.concentration_top_k else "—"),
    ("spars", 6, lambda m: f"{m.sparsity:.3f}"),
]


def _styler(color: bool) -> Callable[..., str]:
    def style(text: str, **kw: object) -> str:
        return click.style(text, **kw) if color else text  # type: ignore[arg-type]

    return style


def format_diagnosis(d: Diagnostics, color: bool = False) -> str:
    s = _styler(color)
    profile = s(d.profile_tag.upper(), fg=PROFILE_COLORS.get(d.profile_tag), bold=True)
    lines = ["", s("─── Diagnosis ───", bold=True), "", d.summary, "", f"Profile: {profile}   Method: {d.method}", ""]
    for f in d.findings:
        icon = s(ICONS[f.severity], fg=SEVERITY_COLORS[f.severity])
        lines.append(f"  {icon} {s(f.title, bold=True)}  {s(f'[{f.code}]', dim=True)}")
        lines.append(f"    {f.detail}")
        lines.append("")
    return "\n".join(lines)


def render_text(report: ComparisonReport, top_n: int = 20, color: bool = False) -> str:
    s = _styler(color)
    mods = profile_modules(report)
    shown = mods[:top_n]
    t = report.totals
    er = f"{t.mean_effective_rank:.0f}" if t.mean_effective_rank is not None else "—"
    name_w = max([len("Module"), *(len(m.name) for m in shown)])
    header = f"{'Module':<{name_w}}  " + " ".join(f"{h:>{w}}" for h, w, _ in COLUMNS)
    lines = [
        s(f"modeldelta: {report.model_a} → {report.model_b}", bold=True),
        f"Tensors: {report.n_tensors} analyzed, {report.n_skipped} skipped "
        f"({t.n_changed} changed, {t.n_identical} identical)",
        f"Total ||ΔW||: {t.total_delta_norm:.2f}  |  Mean cos_sim: {t.mean_cosine_sim:.5f}  |  Mean eff_rank: {er}",
        f"Method: {s(method_line(report.diagnostics), bold=True)}",
        "",
        s(header, bold=True),
        "─" * len(header),
    ]
    for m in shown:
        row = f"{m.name:<{name_w}}  " + " ".join(f"{cell(m):>{w}}" for _, w, cell in COLUMNS)
        lines.append(s(row, dim=True) if m.identical else row)
    if len(mods) > len(shown):
        lines.append(s(f"  ... and {len(mods) - len(shown)} more modules (--top-n to show more)", dim=True))
    lines.append(format_diagnosis(report.diagnostics, color=color))
    return "\n".join(lines)
