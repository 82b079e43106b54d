"""Tool answers cut from a ComparisonReport, and their short Markdown renderings (pure functions, no I/O)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from modeldelta_mcp.models import (
    CompactModule,
    CompareManyAnswer,
    CompareSummary,
    ComparisonReport,
    Counts,
    DiagnosisAnswer,
    FindBaseAnswer,
    Finding,
    ForensicCounters,
    InspectAnswer,
    LayerProfileAnswer,
    ModuleDelta,
    TopModulesAnswer,
)
from modeldelta_mcp.render import markdown as md

REPORT_URI = "modeldelta://reports/{report_id}"
# Compact rows in compare_checkpoints' summary: enough to see where the change sits, small enough for a
# model's context (the summary of a 7B pair must stay well under SUMMARY_BUDGET_BYTES of JSON).
SUMMARY_TOP_MODULES = 10
SUMMARY_BUDGET_BYTES = 8 * 1024
# When the summary runs over budget, evidence lists in findings are cut to this many items (the full
# evidence stays in get_diagnosis and in the report resource).
TRIMMED_EVIDENCE_ITEMS = 5

SortKey = Literal[
    "frob_norm_relative", "frob_norm", "cosine_sim", "sparsity", "effective_rank", "stable_rank",
    "concentration_top_k", "spectral_alpha", "n_params",
]
# "Most changed" first: a lower cosine similarity or a higher sparsity of ΔW mean less change.
ASCENDING: set[str] = {"cosine_sim", "sparsity"}
LAYER_METRICS = ["frob_norm_relative", "cosine_sim", "effective_rank", "concentration_top_k"]


def report_uri(report_id: str) -> str:
    return REPORT_URI.format(report_id=report_id)


def _compact(m: ModuleDelta) -> CompactModule:
    return CompactModule(name=m.name, role=m.role, layer=m.layer, frob_norm_relative=m.frob_norm_relative,
                         cosine_sim=m.cosine_sim, effective_rank=m.effective_rank)


def _trim_evidence(findings: list[Finding]) -> list[Finding]:
    out = []
    for f in findings:
        evidence: dict[str, Any] = {}
        for key, value in f.evidence.items():
            if isinstance(value, list) and len(value) > TRIMMED_EVIDENCE_ITEMS:
                evidence[key] = value[:TRIMMED_EVIDENCE_ITEMS]
                evidence[f"{key}_total"] = len(value)
            else:
                evidence[key] = value
        out.append(f.model_copy(update={"evidence": evidence}))
    return out


def _drop_evidence(findings: list[Finding]) -> list[Finding]:
    return [f.model_copy(update={"evidence": {"omitted": "see get_diagnosis"}}) for f in findings]


def summary(report: ComparisonReport) -> CompareSummary:
    changed = [m for m in report.modules if not m.identical]
    # The seed's set (>= 1000 parameters) first: a tiny bias's large relative change is rarely the story.
    ranked = sorted(changed, key=lambda m: (not m.in_profile, -m.frob_norm_relative))[:SUMMARY_TOP_MODULES]
    answer = CompareSummary(
        report_id=report.report_id,
        model_a=report.model_a,
        model_b=report.model_b,
        checkpoints=report.checkpoints,
        counts=Counts(n_tensors=report.n_tensors, n_skipped=report.n_skipped,
                      n_identical=report.totals.n_identical, n_changed=report.totals.n_changed),
        totals=report.totals,
        diagnostics=report.diagnostics,
        top_modules=[_compact(m) for m in ranked],
        report_uri=report_uri(report.report_id),
        engine=report.engine,
        filters=report.filters,
        base_inferred=report.base_inferred,
    )
    # Over budget: first cut long evidence lists, then drop the evidence (titles and details stay).
    d = report.diagnostics
    for trim in (_trim_evidence, _drop_evidence):
        if len(answer.model_dump_json()) <= SUMMARY_BUDGET_BYTES:
            break
        answer.diagnostics = d.model_copy(update={"findings": trim(d.findings)})  # recipe, direction kept
    return answer


def diagnosis(report: ComparisonReport) -> DiagnosisAnswer:
    return DiagnosisAnswer(report_id=report.report_id, diagnostics=report.diagnostics,
                           base_inferred=report.base_inferred)


def _sort_value(m: ModuleDelta, key: str) -> float:
    value = getattr(m, key)
    return float("nan") if value is None else float(value)


def top_modules(report: ComparisonReport, n: int, sort_by: str, role: str | None,
                include_forensics: bool = False) -> TopModulesAnswer:
    if sort_by not in get_args(SortKey):
        raise ValueError(f"sort_by {sort_by!r}: expected one of {', '.join(get_args(SortKey))}")
    mods = [m for m in report.modules if role is None or m.role == role]
    with_value = [m for m in mods if getattr(m, sort_by) is not None]
    sign = 1.0 if sort_by in ASCENDING else -1.0
    ranked = sorted(with_value, key=lambda m: sign * _sort_value(m, sort_by))
    ranked += [m for m in mods if getattr(m, sort_by) is None]  # no spectrum: listed last
    rows = ranked[:n]
    if not include_forensics:  # ~2 KB of fingerprint counters per row: evidence for the diagnosis, not for reading
        rows = [m.model_copy(update={"forensics": ForensicCounters()}) for m in rows]
    return TopModulesAnswer(report_id=report.report_id, sort_by=sort_by, role=role, modules=rows)


def layer_profile(report: ComparisonReport) -> LayerProfileAnswer:
    roles = sorted({role for row in report.layers for role in row.roles})
    return LayerProfileAnswer(report_id=report.report_id, metrics=list(LAYER_METRICS), roles=roles,
                              layers=report.layers)


# ---- text renderings: short Markdown for clients that read only text; the structured content is the contract ----

# Modules listed in a tool's text (the structured content carries them all).
TEXT_TOP_MODULES = 5


def _num(x: float | int | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _resources(report_id: str) -> str:
    uri = report_uri(report_id)
    return (f"Report {md.code(report_id)}: JSON {md.code(uri)} · HTML {md.code(uri + '/html')} · "
            f"Markdown {md.code(uri + '/md')}")


def _compact_table(rows: list[CompactModule] | list[ModuleDelta]) -> list[str]:
    return md.table(["module", "role", "layer", "ΔW/W", "cos", "eff. rank"],
                    [[md.code(m.name), m.role, "—" if m.layer is None else str(m.layer), f"{m.frob_norm_relative:.4g}",
                      f"{min(1.0, m.cosine_sim):.5f}", _num(m.effective_rank)] for m in rows], "lllrrr")


def summary_text(s: CompareSummary) -> str:
    d, t, c = s.diagnostics, s.totals, s.counts
    lines = [f"## modeldelta: {md.code(s.model_a)} → {md.code(s.model_b)}", "", md.verdict_line(d), "",
             md.md_text(d.summary), "",
             f"{c.n_tensors} tensors compared ({c.n_changed} changed, {c.n_identical} identical, {c.n_skipped} "
             f"skipped) · mean ΔW/W {t.mean_relative_change:.4g} · mean cos {t.mean_cosine_sim:.6f}", "",
             "**Findings**", ""]
    lines += [line for f in d.findings for line in md.finding_lines(f, brief=True)]
    if s.top_modules:
        lines += ["", "**Most changed**", "", *_compact_table(s.top_modules[:TEXT_TOP_MODULES])]
    lines += ["", _resources(s.report_id)]
    return "\n".join(lines)


def diagnosis_text(a: DiagnosisAnswer) -> str:
    d = a.diagnostics
    lines = [f"## Diagnosis (report {md.code(a.report_id)})", "", md.verdict_line(d), "", md.md_text(d.summary), ""]
    lines += [line for f in d.findings for line in md.finding_lines(f, brief=True)]
    return "\n".join(lines)


def top_modules_text(a: TopModulesAnswer) -> str:
    head = f"## Top {len(a.modules)} modules by {md.code(a.sort_by)}" + (f", role {md.code(a.role)}" if a.role else "")
    rows = [[md.code(m.name), m.role, "—" if m.layer is None else str(m.layer), _num(getattr(m, a.sort_by)),
             f"{m.frob_norm_relative:.4g}"] for m in a.modules]
    return "\n".join([head, "", *md.table(["module", "role", "layer", a.sort_by, "ΔW/W"], rows, "lllrr"), "",
                      _resources(a.report_id)])


def layer_profile_text(a: LayerProfileAnswer) -> str:
    roles = a.roles[:md.MAX_LAYER_TABLE_ROLES]
    rows = [[str(row.layer), *(f"{row.roles[r].frob_norm_relative:.3g}" if r in row.roles else "—" for r in roles)]
            for row in a.layers]
    return "\n".join([f"## Relative change ΔW/W per layer and role ({len(a.layers)} layers)", "",
                      *md.table(["layer", *roles], rows, "r" * (len(roles) + 1)), "", _resources(a.report_id)])


def inspect_text(a: InspectAnswer) -> str:
    c = a.checkpoint
    dtypes = ", ".join(f"{k} ×{v}" for k, v in c.dtypes.items())
    return "\n".join([f"## {md.code(c.id)}", "",
                      f"{md.md_text(c.architecture or 'unknown architecture')} · {c.n_tensors} tensors · "
                      f"{c.n_params:,} parameters · {a.n_layers or 0} layers · dtypes {dtypes}",
                      "", "Files: " + ", ".join(md.code(f) for f in c.files[:10])
                      + (f" … (+{len(c.files) - 10})" if len(c.files) > 10 else "")])


__all__ = [
    "LAYER_METRICS", "SUMMARY_BUDGET_BYTES", "SUMMARY_TOP_MODULES", "SortKey", "compare_many_text", "diagnosis",
    "diagnosis_text", "find_base_text",
    "inspect_text", "layer_profile", "layer_profile_text", "report_uri", "summary", "summary_text",
    "top_modules", "top_modules_text",
]


# ---- many candidates --------------------------------------------------------------------------------


def _cell(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def compare_many_text(a: CompareManyAnswer) -> str:
    """The ranking as a short Markdown table (the tool's text; `modeldelta many -o .md` adds the plot)."""
    ok = [r for r in a.rows if r.error is None]
    e = a.engine
    rows = []
    for n, r in enumerate(a.rows, 1):
        if r.error is not None:
            rows.append([str(n), md.code(r.candidate), "—", "—", "—", "—", md.cell(f"error: {r.error}")])
            continue
        rows.append([str(n), md.code(r.candidate), f"{r.profile_tag}, {md.code(r.method or '—')}",
                     _cell(r.mean_relative_change), _cell(r.oq, 3), md.cell(", ".join(r.top_roles) or "—"),
                     md.code(r.report_id or "—")])
    lines = [f"## modeldelta: {len(a.rows)} candidates against {md.code(a.base)}", "",
             f"{len(ok)} compared, ranked by {md.code(a.sort_by)}; {e.from_store} from the store, "
             f"{e.bytes_read / 1e6:,.0f} MB read in {e.seconds:.1f} s ({e.executor}).", "",
             *md.table(["#", "candidate", "profile, method", "mean ΔW/W", "O/Q", "most changed", "report_id"],
                       rows, "rllrrll"),
             "", "Each report_id answers get_diagnosis, top_changed_modules and layer_profile from the store."]
    return "\n".join(lines)


def find_base_text(a: FindBaseAnswer) -> str:
    if a.decision == "found":
        head = f"{md.code(a.model)} was derived from {md.code(a.base or '')}"
        head += f" (the runner-up is {a.margin:.2f}x farther)" if a.margin is not None else ""
        head += f"; exact comparison: report_id {md.code(a.report_id or '')}."
    elif a.decision == "ambiguous":
        head = (f"Ambiguous: the nearest candidates are within {a.screen.decision_margin}x of each other "
                f"(margin {_cell(a.margin, 3)}); no base named.")
    else:
        head = f"None of the {len(a.candidates)} candidates is related to {md.code(a.model)}."
    rows = [[md.code(c.candidate), "error" if c.error else ("related" if c.related else "unrelated"),
             _cell(c.cosine_sim, 6), _cell(c.relative_change), f"{c.bytes_read / 1e6:.1f} MB",
             md.cell(c.error or "")] for c in a.candidates]
    lines = [f"## modeldelta: base of {md.code(a.model)}", "", head, "",
             *md.table(["candidate", "screen", "cosine", "relative change", "read", "error"], rows, "llrrrl"), "",
             f"Screened {a.engine.bytes_read / 1e6:,.1f} MB in {a.engine.seconds:.1f} s: "
             f"{len(a.screen.tensors)} sampled tensors, at most {a.screen.bytes_per_tensor // 1024} KiB each."]
    return "\n".join(lines)
