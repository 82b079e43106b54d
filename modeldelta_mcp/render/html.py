"""The HTML report: one self-contained file (inline CSS, inline SVG figures, a small inline script).

Built with Jinja2 (autoescaping on, undefined names are errors) from templates/report.html.j2, which
includes templates/report.css and templates/report.js inline. Jinja2 rather than string.Template or
hand-escaped f-strings: every value is escaped by default (module names, specs and finding text come
from user files), loops and conditionals stay in the template where a reader expects them, and it costs
no install weight (torch already requires it; it is declared here because we import it). The only
unescaped insertions are the SVGs that matplotlib wrote, which escape their own text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from modeldelta_mcp import __version__
from modeldelta_mcp.models import CheckpointInfo, ComparisonReport, Finding
from modeldelta_mcp.render.derive import fmt_num, fmt_params, hub_url, layer_drift, role_key
from modeldelta_mcp.render.evidence import fmt_value, key_evidence, method_finding, method_line
from modeldelta_mcp.render.plots import report_plots

TEMPLATES = Path(__file__).with_name("templates")
# Evidence lists of roles or module names, shown as chips; a LoRA's roles are its targets.
CHIP_KEYS = {"roles": "roles", "target_modules": "targets", "frozen_roles": "frozen roles",
             "untouched_roles": "untouched roles"}


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    return env


@dataclass
class Card:
    finding: Finding
    primary: bool
    facts: list[tuple[str, str]]
    chips: dict[str, list[str]]
    strip: list[tuple[int, str]] = field(default_factory=list)  # (layer, "frozen" | "changed" | "copy")
    evidence: list[tuple[str, str]] = field(default_factory=list)


def _strip(f: Finding, n_layers: int) -> list[tuple[int, str]]:
    """The layer strip of a frozen-layers or layer-copy card: one cell per layer, coloured by state."""
    ev = f.evidence
    if f.code == "frozen_modules" and isinstance(ev.get("frozen_layers"), list):
        frozen = set(ev["frozen_layers"])
        changed = set(ev.get("changed_layers") or [])
        layers = range(max([n_layers - 1, *frozen, *changed]) + 1)
        return [(i, "frozen" if i in frozen else "changed" if i in changed else "absent") for i in layers]
    if f.code == "layer_copy" and isinstance(ev.get("copies"), list):
        copied = {int(pair[0]) for pair in ev["copies"]}
        return [(i, "copy" if i in copied else "other") for i in range(max([n_layers - 1, *copied]) + 1)]
    return []


def _card(f: Finding, primary: bool, n_layers: int) -> Card:
    chips: dict[str, list[str]] = {}
    for key, label in CHIP_KEYS.items():
        if isinstance(f.evidence.get(key), list) and f.evidence[key]:
            if key == "roles" and f.code == "lora_merge":
                label = "targets"  # a merged LoRA's changed roles are its targets
            chips.setdefault(label, sorted(map(str, f.evidence[key]), key=role_key))
    facts = [(label, value) for label, value in key_evidence(f) if label not in chips]
    return Card(f, primary, facts, chips, _strip(f, n_layers),
                [(k, fmt_value(v)) for k, v in f.evidence.items()])


def _checkpoint(c: CheckpointInfo) -> dict[str, Any]:
    return {
        "id": c.id, "url": hub_url(c.id, c.source, c.revision), "source": c.source,
        "revision": c.revision, "params": fmt_params(c.n_params), "n_params": c.n_params, "n_tensors": c.n_tensors,
        "dtypes": ", ".join(f"{k} ×{v}" for k, v in c.dtypes.items()), "architecture": c.architecture or "—",
        "files": len(c.files),
    }


def _module_rows(report: ComparisonReport) -> list[dict[str, Any]]:
    rows = []
    for m in sorted(report.modules, key=lambda m: m.frob_norm_relative, reverse=True):
        rows.append({
            "name": m.name, "role": m.role, "layer": m.layer, "shape": "×".join(map(str, m.shape)),
            "rel": m.frob_norm_relative, "norm": m.frob_norm, "cos": min(1.0, m.cosine_sim),
            "erank": m.effective_rank if m.has_svd else None, "conc": m.concentration_top_k if m.has_svd else None,
            "sparsity": m.sparsity, "identical": m.identical,
            "dtype": m.dtype_b if m.dtype_a == m.dtype_b else f"{m.dtype_a}→{m.dtype_b}",
        })
    return rows


def _sort_value(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))


def render_html(report: ComparisonReport, top_n: int = 20) -> str:
    """The report page. `top_n` is unused: the page always carries the full module table."""
    d, t = report.diagnostics, report.totals
    n_layers = len(report.layers)
    primary = method_finding(d)
    method_cards = [_card(f, f is primary, n_layers) for f in d.findings if f.category == "method"]
    other_cards = [_card(f, False, n_layers) for f in d.findings if f.category != "method"]
    method_cards.sort(key=lambda c: not c.primary)
    oq = next((f.evidence.get("oq") for f in d.findings if f.code == "oq_ratio"), None)
    kpis = [
        ("tensors compared", str(report.n_tensors)),
        ("changed / identical", f"{t.n_changed} / {t.n_identical}"),
        ("skipped", str(report.n_skipped)),
        ("total ‖ΔW‖", fmt_num(t.total_delta_norm, 4)),
        ("mean ΔW/W", f"{t.mean_relative_change:.4f}"),
        ("mean cosine", f"{t.mean_cosine_sim:.5f}"),
        ("mean eff. rank", fmt_num(t.mean_effective_rank, 4)),
    ]
    if oq is not None:
        kpis.append(("O/Q ratio", fmt_num(float(oq), 3)))
    rows = _module_rows(report)
    roles = sorted({r["role"] for r in rows}, key=role_key)
    plots = [(p, Markup(p.svg)) for p in report_plots(report)]
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report, d=d, t=t, a=_checkpoint(report.checkpoints.a), b=_checkpoint(report.checkpoints.b),
        method_line=method_line(d), primary=primary, method_cards=method_cards, other_cards=other_cards,
        kpis=kpis, plots=plots, rows=rows, roles=roles, sort_value=_sort_value,
        frozen_layers=[x.layer for x in layer_drift(report) if x.frozen], version=__version__,
        css=Markup((TEMPLATES / "report.css").read_text(encoding="utf-8")),
        js=Markup((TEMPLATES / "report.js").read_text(encoding="utf-8")),
    )
