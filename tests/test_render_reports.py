"""Report renderings (text, JSON, Markdown, HTML) of stored reports of real pairs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _core_ckpt import run_compare
from _render_chromium import crop_to_content, find_chromium, render_page
from _render_pairs import lora_frozen_pair, pair_300

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport, ForensicCounters
from modeldelta_mcp.render import format_for_path, render_report
from modeldelta_mcp.render.derive import rank_cliff, spectral_knee
from modeldelta_mcp.store import ResultStore

PLOT_IDS = ["heatmap-frob_norm_relative", "heatmap-cosine_sim", "heatmap-effective_rank",
            "heatmap-concentration_top_k", "layer-drift", "spectra", "histogram"]
CHROMIUM_MISSING = ("headless Chromium not found (Debian: apt-get install chromium); "
                    ".ci/run installs it where apt-get is available")


@pytest.fixture(scope="session")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultStore, str]:
    """A LoRA-merge + frozen-layer report, computed once and read back from a result store."""
    root = tmp_path_factory.mktemp("render-pair")
    a, b = lora_frozen_pair(root)
    store = ResultStore(root / "store")
    report = run_compare(a, b)
    store.put(report)
    return store, report.report_id


@pytest.fixture(scope="session")
def report(stored: tuple[ResultStore, str]) -> ComparisonReport:
    store, report_id = stored
    got = store.get(report_id)
    assert got is not None
    return got


@pytest.fixture(scope="session")
def html_page(report: ComparisonReport) -> str:
    return render_report(report, "html")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def test_each_format_renders_from_the_store(report: ComparisonReport) -> None:
    assert report.diagnostics.method == "lora_merge"
    assert json.loads(render_report(report, "json")) == json.loads(report.model_dump_json())
    text = render_report(report, "text")
    assert "lora_merge — " in text and "rank 2" in text and "─── Diagnosis ───" in text
    md = render_report(report, "md")
    assert md.startswith("# modeldelta: ") and "## Findings" in md and "## Per layer" in md
    page = render_report(report, "html")
    assert page.startswith("<!DOCTYPE html>") and report.report_id in page


def test_format_for_path() -> None:
    assert format_for_path("x/report.HTML") == "html"
    assert format_for_path("r.md") == "md"
    with pytest.raises(ModelDeltaError, match=r"unknown output format \.pdf"):
        format_for_path("r.pdf")


def test_html_parses_references_nothing_outside_and_holds_every_plot(html_page: str) -> None:
    page = parse(html_page)
    ids = [attrs["id"] for _, attrs in page.tags if attrs.get("id")]
    assert len(ids) == len(set(ids)), "duplicate element ids (SVG clip paths of two figures collided?)"
    for tag, attrs in page.tags:
        assert not (tag == "link" or (tag == "script" and "src" in attrs)), f"external resource: <{tag} {attrs}>"
        for key in ("src", "href", "xlink:href", "srcset", "poster", "data"):
            value = attrs.get(key)
            if value is None:
                continue
            if tag == "a" and key == "href" and value.startswith("https://huggingface.co/"):
                continue  # a plain link to a model page is fine; nothing is loaded from it
            assert value.startswith(("#", "data:")), f"<{tag} {key}={value[:80]!r}> points outside the file"
    assert "@import" not in page.style and not re.search(r"url\(\s*['\"]?(?!data:|#)", page.style)
    for plot_id in PLOT_IDS:
        assert plot_id in ids, f"plot {plot_id} missing"
    sections = {attrs["id"] for tag, attrs in page.tags if tag == "section" and attrs.get("id")}
    assert set(PLOT_IDS) <= sections
    assert sum(1 for tag, attrs in page.tags if tag == "svg" and attrs.get("class") == "figure-svg") == len(PLOT_IDS)


def test_html_cards_and_module_table(report: ComparisonReport, html_page: str) -> None:
    # the LoRA card shows rank and targets, the frozen-layers card its strip with the last layer frozen
    card = html_page.split('id="finding-lora_merge"')[1].split("</article>")[0]
    assert '<div class="fact-value">2</div><div class="fact-label">rank</div>' in card
    assert '<span class="chip">attn_q</span><span class="chip">attn_v</span>' in card
    strip = html_page.split('id="finding-frozen_modules"')[1].split("</article>")[0]
    assert 'class="cell frozen" title="layer 5: frozen"' in strip and 'title="layer 0: changed"' in strip
    rows = re.findall(r'<tr data-role="([a-z_]+)"', html_page)
    assert len(rows) == len(report.modules)
    assert "rank cliff" in html_page.split('id="spectra"')[1].split("</section>")[0]


def test_rank_cliff_is_read_from_the_spectrum(report: ComparisonReport) -> None:
    q = next(m for m in report.modules if m.name == "model.layers.0.self_attn.q_proj.weight")
    rank, ratio = rank_cliff(q)
    assert rank == 2 and ratio is not None and ratio > 1e3
    dense = q.model_copy(update={"top_singular_values": [1.0 / (i + 1) for i in range(20)],
                                 "forensics": ForensicCounters()})
    assert rank_cliff(dense) == (None, None)


def test_spectral_knee_finds_a_low_rank_part_above_a_dense_floor() -> None:
    smooth = [0.02 * 0.96**i for i in range(20)]
    planted = smooth[:16] + [v * 0.45 for v in smooth[16:]]
    rank, ratio = spectral_knee(planted)
    assert rank == 16 and ratio is not None and 2.0 < ratio < 2.5
    assert spectral_knee(smooth) == (None, None)
    assert spectral_knee([1.0, *smooth[1:]]) == (None, None)  # a dominant σ_1 alone is no knee


def test_markdown_carries_the_json_finding_codes(report: ComparisonReport) -> None:
    md = render_report(report, "md")
    codes = {f["code"] for f in json.loads(render_report(report, "json"))["diagnostics"]["findings"]}
    assert {"lora_merge", "frozen_modules"} <= codes
    for code in codes:
        assert f"`{code}`" in md
    table = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(table) == 20
    brief = render_report(report, "md", top_n=3)
    assert len([line for line in brief.splitlines() if line.startswith("| `")]) == 3


def test_terminal_table_is_aligned_and_coloured_only_when_asked(report: ComparisonReport) -> None:
    long_name = report.modules[0].model_copy(update={"name": "x." * 60 + "weight", "frob_norm_relative": 9.0})
    wide = report.model_copy(update={"modules": [*report.modules, long_name]})
    text = render_report(wide, "text", top_n=5)
    assert "\x1b[" not in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Module "))
    rows = lines[header + 2: header + 7]
    assert len({len(line) for line in [lines[header], *rows]}) == 1, "columns not aligned"
    assert "... and" in lines[header + 7] and "more modules" in lines[header + 7]
    coloured = render_report(report, "text", color=True)
    assert "\x1b[" in coloured
    method_line = next(line for line in text.splitlines() if line.startswith("Method: "))
    assert "lora_merge" in method_line and "rank 2" in method_line and "targets attn_q, attn_v" in method_line


def test_a_300_tensor_report_renders(tmp_path: Path) -> None:
    a, b = pair_300(tmp_path)
    report = run_compare(a, b)
    assert report.n_tensors == 300
    page = render_report(report, "html")
    assert len(re.findall(r'<tr data-role="', page)) == 300
    for plot_id in PLOT_IDS:
        assert f'id="{plot_id}"' in page
    assert render_report(report, "md").count("\n| ") > 40  # 20 modules + 33 layers


def test_chromium_renders_the_page_without_console_errors(html_page: str, tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.skip(CHROMIUM_MISSING)
    html = tmp_path / "report.html"
    html.write_text(html_page, encoding="utf-8")
    run = render_page(html, tmp_path / "report.png")
    assert run.console == [], f"console output from the page: {run.console}"
    crop_to_content(run.screenshot)
    assert run.screenshot.stat().st_size > 20_000  # a rendered page, not a blank canvas


def test_edge_reports_render(report: ComparisonReport, tmp_path: Path) -> None:
    """Without spectra, without layers, with nothing changed, and from the hub (plain links to model pages)."""
    from modeldelta_mcp.compare import compare, resolve_pair
    from modeldelta_mcp.engine import EngineOptions

    a, _ = lora_frozen_pair(tmp_path)
    no_spectrum = compare(resolve_pair(str(a), str(tmp_path / "lora_frozen")), EngineOptions(spectrum="off"))
    page = render_report(no_spectrum, "html")
    assert "No changed module has singular values" in page
    same = run_compare(a, a)
    assert same.diagnostics.profile_tag == "identical"
    page = render_report(same, "html")
    assert "No module changed." in page and render_report(same, "md") and render_report(same, "text")
    flat = report.model_copy(update={"layers": []})
    page = render_report(flat, "html")
    assert 'id="heatmap-' not in page and 'id="spectra"' in page and 'id="histogram"' in page
    hub = report.checkpoints.b.model_copy(update={"source": "hub", "id": "org/tuned@main", "revision": "ab" * 20})
    page = render_report(report.model_copy(update={"checkpoints": report.checkpoints.model_copy(update={"b": hub})}),
                         "html")
    assert f'href="https://huggingface.co/org/tuned/tree/{"ab" * 20}"' in page


def test_quantization_and_copy_cards_show_their_evidence(report: ComparisonReport) -> None:
    from modeldelta_mcp.models import Finding

    quant = Finding(code="quantization_roundtrip", category="method", severity="info", title="4-bit round trip",
                    detail="d", evidence={"bits": 4, "granularity": "per_group", "group_size": 128,
                                          "scheme": "uniform", "n_tensors": 10, "roles": ["attn_q", "mlp_up"]})
    copy = Finding(code="layer_copy", category="method", severity="notable", title="Layer 5 copied from 2",
                   detail="d", evidence={"copies": [[5, 2]], "n_copies": 1})
    d = report.diagnostics.model_copy(update={"findings": [quant, copy], "method": "quantization_roundtrip"})
    page = render_report(report.model_copy(update={"diagnostics": d}), "html")
    card = page.split('id="finding-quantization_roundtrip"')[1].split("</article>")[0]
    for value, label in (("4", "bits"), ("per_group", "granularity"), ("128", "group"), ("uniform", "scheme")):
        assert f'<div class="fact-value">{value}</div><div class="fact-label">{label}</div>' in card
    assert "tag-primary" in card
    strip = page.split('id="finding-layer_copy"')[1].split("</article>")[0]
    assert 'class="cell copy" title="layer 5: copy"' in strip
    md = render_report(report.model_copy(update={"diagnostics": d}), "md")
    assert "bits **4** · granularity **per_group** · group **128**" in md
