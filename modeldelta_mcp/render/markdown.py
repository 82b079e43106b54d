"""The Markdown rendering (GitHub-flavoured, readable as plain text): for agents, chat answers, PR comments.

Summary, findings with their evidence, the top modules and a compact per-layer table. `brief` keeps it to
what a text-only MCP client should show: the summary, the findings with key evidence, a few modules.
"""

from __future__ import annotations

import re

from modeldelta_mcp.models import ComparisonReport, Diagnostics, Finding
from modeldelta_mcp.render.derive import fmt_num, fmt_params, hub_url, layer_drift, layer_roles, profile_modules
from modeldelta_mcp.render.evidence import fmt_value, key_evidence, method_line

# More roles than this and the per-layer table keeps only its totals (a table must stay readable as text).
MAX_LAYER_TABLE_ROLES = 10
# Markdown syntax that could turn free text into markup, and only where it would: `_` at word edges
# (intraword `_` is literal in GitHub Markdown, and module names are full of it), `<` opening a tag,
# `#` and `>` at the start of a line. Pipes only matter inside tables (`cell`).
_ESCAPE = re.compile(r"[\\`*\[\]]|(?<!\w)_|_(?!\w)|<(?=[A-Za-z/!?])|^[#>]", re.M)


def md_text(text: str) -> str:
    return _ESCAPE.sub(lambda m: "\\" + m.group(0), text)


def cell(text: str) -> str:
    return md_text(text).replace("|", "\\|")


def code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """`align`: one character per column, l or r."""
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _checkpoints(report: ComparisonReport) -> list[str]:
    rows = []
    a, b = report.checkpoints.a, report.checkpoints.b

    def ident(spec: str, source: str, rev: str | None) -> str:
        url = hub_url(spec, source, rev)
        return f"[{code(spec)}]({url})" if url else code(spec)

    rows.append(["checkpoint", ident(a.id, a.source, a.revision), ident(b.id, b.source, b.revision)])
    rows.append(["revision", *(code(c.revision[:12]) if c.revision else "—" for c in (a, b))])
    rows.append(["parameters", fmt_params(a.n_params), fmt_params(b.n_params)])
    rows.append(["tensors", str(a.n_tensors), str(b.n_tensors)])
    rows.append(["dtypes", cell(", ".join(f"{k} ×{v}" for k, v in a.dtypes.items())),
                 cell(", ".join(f"{k} ×{v}" for k, v in b.dtypes.items()))])
    rows.append(["architecture", cell(a.architecture or "—"), cell(b.architecture or "—")])
    return table(["", "A (base)", "B"], rows, "lll")


def finding_lines(f: Finding, brief: bool) -> list[str]:
    """A bullet: title, code, severity; its key evidence; unless brief, the detail and all evidence."""
    facts = " · ".join(f"{label} **{md_text(value)}**" for label, value in key_evidence(f))
    lines = [f"- **{md_text(f.title)}** {code(f.code)} · {f.severity}"]
    if facts:
        lines.append(f"  - {facts}")
    if not brief:
        lines.append(f"  - {md_text(f.detail)}")
        rest = [f"{k} {code(fmt_value(v))}" for k, v in f.evidence.items()]
        if rest:
            lines.append("  - evidence: " + ", ".join(rest))
    return lines


def verdict_line(d: Diagnostics) -> str:
    return f"**Profile:** {d.profile_tag.upper()} · **Method:** {md_text(method_line(d))}"


def _modules(report: ComparisonReport, top_n: int) -> list[str]:
    mods = profile_modules(report)
    rows = [[code(m.name), m.role, "—" if m.layer is None else str(m.layer), f"{m.frob_norm_relative:.4f}",
             f"{min(1.0, m.cosine_sim):.5f}", fmt_num(m.effective_rank, 3) if m.has_svd and not m.identical else "—",
             fmt_num(m.concentration_top_k, 3) if m.has_svd and not m.identical else "—"] for m in mods[:top_n]]
    lines = table(["module", "role", "layer", "ΔW/W", "cos", "eff. rank", "top-k conc."], rows, "lllrrrr")
    if len(mods) > top_n:
        lines.append(f"\n{len(mods) - top_n} more modules in the full report.")
    return lines


def _layers(report: ComparisonReport) -> list[str]:
    drift = layer_drift(report)
    roles = layer_roles(report)
    if len(roles) > MAX_LAYER_TABLE_ROLES:
        roles = []
    by_layer = {row.layer: row.roles for row in report.layers}
    rows = []
    for d in drift:
        cells = by_layer.get(d.layer, {})
        rows.append([str(d.layer), fmt_num(d.delta_norm, 3), fmt_num(d.relative, 3),
                     *(fmt_num(cells[r].frob_norm_relative, 3) if r in cells else "—" for r in roles)])
    header = ["layer", "‖ΔW‖", "ΔW/W", *roles]
    return table(header, rows, "r" * len(header))


def render_markdown(report: ComparisonReport, top_n: int = 20, brief: bool = False) -> str:
    d, t = report.diagnostics, report.totals
    er = fmt_num(t.mean_effective_rank, 3)
    lines = [f"# modeldelta: {code(report.model_a)} → {code(report.model_b)}", ""]
    if not brief:
        lines += [*_checkpoints(report), ""]
    lines += [
        verdict_line(d),
        "",
        md_text(d.summary),
        "",
        f"{report.n_tensors} tensors compared ({t.n_changed} changed, {t.n_identical} identical, "
        f"{report.n_skipped} skipped) · total ‖ΔW‖ {t.total_delta_norm:.3g} · mean ΔW/W "
        f"{t.mean_relative_change:.4f} · mean cos {t.mean_cosine_sim:.5f} · mean eff. rank {er}",
        "",
        "## Findings",
        "",
    ]
    for f in d.findings:
        lines += finding_lines(f, brief)
    lines += ["", f"## Top {min(top_n, len(report.modules))} modules by relative change", "",
              *_modules(report, top_n)]
    if not brief and report.layers:
        lines += ["", "## Per layer", "", "‖ΔW‖ and ΔW/W over every tensor of the layer; then ΔW/W by role.", "",
                  *_layers(report)]
    if not brief and report.skipped:
        lines += ["", "## Skipped tensors", ""]
        lines += [f"- {code(s.name)}: {md_text(s.reason)}" for s in report.skipped[:50]]
        if len(report.skipped) > 50:
            lines.append(f"- … and {len(report.skipped) - 50} more")
    lines += ["", f"Report {code(report.report_id)} · modeldelta-mcp {report.engine.version} · "
                  f"spectrum {report.engine.spectrum}, top-k {report.engine.top_k}", ""]
    return "\n".join(lines)
