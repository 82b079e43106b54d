"""The seed's terminal table and diagnosis, from a ComparisonReport."""

from __future__ import annotations

from modeldelta_mcp.models import ComparisonReport, Diagnostics

ICONS = {"info": "•", "notable": "▸", "warning": "⚠"}


def format_diagnosis(d: Diagnostics) -> str:
    lines = ["", "─── Diagnosis ───", "", d.summary, f"Profile: {d.profile_tag.upper()}   Method: {d.method}", ""]
    for f in d.findings:
        lines.append(f"  {ICONS[f.severity]} {f.title}")
        lines.append(f"    {f.detail}")
        lines.append("")
    return "\n".join(lines)


def render_text(report: ComparisonReport, top_n: int = 20) -> str:
    mods = sorted((m for m in report.modules if m.in_profile) or report.modules,
                  key=lambda m: m.frob_norm_relative, reverse=True)
    t = report.totals
    er = f"{t.mean_effective_rank:.0f}" if t.mean_effective_rank is not None else "—"
    lines = [
        f"modeldelta: {report.model_a} → {report.model_b}",
        f"Tensors: {report.n_tensors} analyzed, {report.n_skipped} skipped",
        f"Total ||ΔW||: {t.total_delta_norm:.2f}  |  Mean cos_sim: {t.mean_cosine_sim:.5f}  |  Mean eff_rank: {er}",
        "",
        f"{'Module':<55} {'ΔW/W':>8} {'cos_sim':>8} {'eff_rank':>9} {'conc':>7} {'spars':>6}",
        "─" * 95,
    ]
    for m in mods[:top_n]:
        eff = f"{m.effective_rank:.0f}" if m.has_svd and m.effective_rank else "—"
        conc = f"{m.concentration_top_k:.3f}" if m.has_svd and m.concentration_top_k else "—"
        lines.append(f"{m.name:<55} {m.frob_norm_relative:>8.4f} {min(1.0, m.cosine_sim):>8.5f} "
                     f"{eff:>9} {conc:>7} {m.sparsity:>6.3f}")
    if len(mods) > top_n:
        lines.append(f"  ... and {len(mods) - top_n} more modules")
    lines.append(format_diagnosis(report.diagnostics))
    return "\n".join(lines)
