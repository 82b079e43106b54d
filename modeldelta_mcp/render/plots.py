"""The HTML report's figures, drawn with matplotlib as inline SVG (one figure per plot).

Figures are built on `matplotlib.figure.Figure` directly (no pyplot, so no GUI backend, no global figure
registry: safe in the MCP server's threads) and written by the SVG backend; raster parts (heatmap cells)
are embedded by matplotlib as `data:` PNGs. Text stays text (`svg.fonttype: none`): small, crisp in print,
searchable. matplotlib numbers element ids per figure (`axes_1`, clip paths...), so every id and reference
inside a figure is prefixed with the plot's id: several figures share one page without id collisions.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axis import Axis
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.render.derive import (
    HEATMAP_METRICS,
    Spectrum,
    heatmap,
    layer_drift,
    layer_roles,
    profile_modules,
    role_key,
    short_name,
    top_spectra,
)

INK, MUTED, GRID, ACCENT, ALERT, KNEE = "#1f2933", "#616e7c", "#e4e7eb", "#2563eb", "#dc2626", "#d97706"
STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.08,
    "savefig.transparent": True,
}
HEATMAP_CMAPS = {"frob_norm_relative": "YlOrRd", "cosine_sim": "RdYlGn", "effective_rank": "viridis",
                 "concentration_top_k": "PuBu"}
# Write the value into each heatmap cell when the grid is this small (larger grids get a colour bar only).
ANNOTATE_MAX_CELLS = 160
SPECTRA_COLUMNS = 3
LABEL_RIGHT_LIMIT = 0.72  # a cliff/knee label fits right of its line up to this fraction of the log axis
# Relative changes spanning at least this factor get log-spaced bins (LoRA targets vs untouched-ish modules);
# a narrower spread reads better on a linear axis.
LOG_HISTOGRAM_SPAN = 10.0
WIDTH_IN = 10.0  # figure width in inches; the page scales SVGs to its column width


@dataclass(frozen=True)
class Plot:
    id: str
    title: str
    caption: str
    svg: str


_XML_HEAD = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SIZE = re.compile(r'(<svg[^>]*?) width="[^"]*" height="[^"]*"')
_IDS = re.compile(r'(\bid="|href="#|url\(#)')


def _svg(fig: Figure, plot_id: str) -> str:
    """The figure as an <svg> element for inlining: no XML prolog, no RDF metadata, scalable, ids prefixed."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = _XML_HEAD.sub("", buf.getvalue(), count=1)
    text = _METADATA.sub("", text, count=1)
    text = _IDS.sub(lambda m: f"{m.group(1)}{plot_id}-", text)
    return _SIZE.sub(r'\1 class="figure-svg" preserveAspectRatio="xMinYMin meet"', text, count=1)


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _draw(plot_id: str, build: Callable[[], Figure]) -> str:
    rc: Any = {**STYLE, "svg.hashsalt": "modeldelta"}  # a fixed salt: the same report renders the same page
    with matplotlib.rc_context(rc):
        return _svg(build(), plot_id)


def _plain_log_axis(axis: Axis) -> None:
    """Log-axis ticks at 1, 2, 5 × 10^k written as plain numbers (10⁻⁸ stays scientific)."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _text_color(rgba: tuple[float, ...]) -> str:
    """White on dark cells, ink on light ones (relative luminance of the cell colour)."""
    r, g, b = rgba[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else INK


def _heatmap(report: ComparisonReport, metric: str) -> Figure:
    layers, roles, values = heatmap(report, metric)
    data = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    cmap: Colormap = matplotlib.colormaps[HEATMAP_CMAPS[metric]].with_extremes(bad="#eceff2")
    fig = _figure(WIDTH_IN, 0.75 + 0.24 * len(roles))
    ax = fig.add_subplot()
    finite = data[np.isfinite(data)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    norm = Normalize(vmin, vmax)
    im = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_yticks(range(len(roles)), roles)
    if len(layers) <= 40:
        ax.set_xticks(range(len(layers)), [str(x) for x in layers])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=30, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: str(layers[int(x)]) if 0 <= x < len(layers) else ""))
    ax.set_xlabel("layer")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if metric == "cosine_sim":
        digits = max(3, min(7, 1 - math.floor(math.log10(max(1 - vmin, 1e-7)))))  # enough to see 1 - cos
        label = f"{{:.{digits}f}}"
    elif metric == "effective_rank":
        label = "{:.3g}"
    else:
        label = "{:.3g}"
    bar = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, format=FuncFormatter(lambda v, _: label.format(v)))
    bar.outline.set_visible(False)
    bar.ax.tick_params(labelsize=7.5)
    if data.size <= ANNOTATE_MAX_CELLS:
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, label.format(v), ha="center", va="center", fontsize=7, color=_text_color(cmap(norm(v))))
    return fig


def _layer_drift(report: ComparisonReport) -> Figure:
    drift = layer_drift(report)
    fig = _figure(WIDTH_IN, 2.6)
    ax = fig.add_subplot()
    xs = [d.layer for d in drift]
    ax.bar(xs, [d.relative for d in drift], color=[GRID if d.frozen else ACCENT for d in drift], width=0.75)
    frozen = [d.layer for d in drift if d.frozen]
    if frozen:
        ax.plot(frozen, [0] * len(frozen), "x", color=MUTED, markersize=7, label="frozen (bit-identical)",
                clip_on=False)
        ax.legend(frameon=False, loc="upper right")
    ax.set_xlabel("layer")
    ax.set_ylabel("‖ΔW‖ / ‖W‖ of the layer")
    if len(xs) <= 40:
        ax.set_xticks(xs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=30, integer=True))
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    return fig


def _spectrum_mark(sp: Spectrum) -> tuple[int, str, str, str] | None:
    """(rank, colour, line style, label) of a rank cliff, else of a knee, else None."""
    if sp.cliff_rank is not None:
        ratio = "" if sp.cliff_ratio is None or math.isinf(sp.cliff_ratio) else f"\n÷{sp.cliff_ratio:.2g}"
        return sp.cliff_rank, ALERT, "--", f"rank cliff\nat {sp.cliff_rank}{ratio}"
    if sp.knee_rank is not None and sp.knee_ratio is not None:
        return sp.knee_rank, KNEE, ":", f"knee at {sp.knee_rank}\n÷{sp.knee_ratio:.2g}"
    return None


def _spectra(report: ComparisonReport, n: int) -> Figure:
    spectra = top_spectra(report, n)
    cols = min(SPECTRA_COLUMNS, max(1, len(spectra)))
    rows = max(1, math.ceil(len(spectra) / cols))
    fig = _figure(WIDTH_IN, 2.4 * rows)
    if not spectra:
        fig.text(0.5, 0.5, "No changed module has singular values (spectrum off, or nothing changed).",
                 ha="center", va="center", color=MUTED)
        return fig
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, sp in zip(axes.flat, spectra, strict=False):
        ranks = np.arange(1, len(sp.values) + 1)
        ax.loglog(ranks, sp.values, "-o", color=ACCENT, markersize=2.5, linewidth=1.3)
        name = short_name(sp.module.name)
        ax.set_title(name if len(name) <= 40 else "…" + name[-39:], fontsize=8.5)
        er = sp.module.effective_rank
        stats = f"ΔW/W {sp.module.frob_norm_relative:.3g}" + (f"\neff. rank {er:.3g}" if er else "")
        ax.text(0.03, 0.04, stats, transform=ax.transAxes, ha="left", va="bottom", fontsize=7.5, color=MUTED)
        mark = _spectrum_mark(sp)
        if mark is not None:
            rank, color, style, label = mark
            ax.axvline(rank + 0.5, color=color, linestyle=style, linewidth=1.1)
            # Right of the line, at the top, is empty (the values there are lower); near the right edge, the
            # label goes left of the line at mid height, under the values before the drop.
            if math.log(rank + 0.5) / math.log(len(sp.values) + 0.5) < LABEL_RIGHT_LIMIT:
                ax.text(rank + 0.7, sp.values[0], label, color=color, fontsize=7.5, va="top", ha="left")
            else:
                mid = math.sqrt(sp.values[0] * sp.values[-1])
                ax.text(rank + 0.3, mid, label, color=color, fontsize=7.5, va="center", ha="right")
        _plain_log_axis(ax.xaxis)
        if sp.values[0] / sp.values[-1] < 1e3:  # a few decades read better as plain numbers; more stay 10^k
            _plain_log_axis(ax.yaxis)
        ax.set_xlabel("rank i", fontsize=8)
        ax.set_ylabel("σᵢ", fontsize=8)
        ax.tick_params(labelsize=7.5)
        ax.grid(which="major", color=GRID, linewidth=0.5)
    for ax in list(axes.flat)[len(spectra):]:
        ax.set_visible(False)
    return fig


def _histogram(report: ComparisonReport) -> Figure:
    changed = [m for m in profile_modules(report) if m.frob_norm_relative > 0]
    fig = _figure(WIDTH_IN, 3.0)
    ax = fig.add_subplot()
    if not changed:
        ax.text(0.5, 0.5, "No module changed.", ha="center", va="center", color=MUTED, transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    roles = sorted({m.role for m in changed}, key=role_key)
    lo = min(m.frob_norm_relative for m in changed)
    hi = max(m.frob_norm_relative for m in changed)
    log_scale = hi / lo >= LOG_HISTOGRAM_SPAN
    if hi - lo < 1e-3 * hi:  # one value, or nearly: give it a visible width
        lo, hi = lo * 0.9, hi * 1.1
    bins = list(np.geomspace(lo, hi * (1 + 1e-9), 31) if log_scale else np.linspace(lo, hi * (1 + 1e-9), 31))
    colors = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    ax.hist([[m.frob_norm_relative for m in changed if m.role == r] for r in roles], bins=bins, stacked=True,
            label=roles, color=[colors[(2 * i) % 20 + (i // 10)] for i in range(len(roles))])
    if log_scale:
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
    ax.set_xlabel("relative change ‖ΔW‖/‖W‖ per module" + (" (log scale)" if log_scale else ""))
    ax.set_ylabel("modules")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False, ncols=min(4, len(roles)), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    return fig


# matplotlib's rc_context sets process-wide rcParams: one report's figures at a time (the MCP server renders
# resources in worker threads).
_RC_LOCK = threading.Lock()


def report_plots(report: ComparisonReport, n_spectra: int = 6) -> list[Plot]:
    """Every figure of the HTML report, in page order."""
    with _RC_LOCK:
        return _report_plots(report, n_spectra)


def _report_plots(report: ComparisonReport, n_spectra: int) -> list[Plot]:
    n_identical = report.totals.n_identical
    plots = [
        Plot(f"heatmap-{metric}", title,
             "Layers × module roles, one cell per weight matrix (norm scales are in the table); grey: the layer "
             "has no such module.",
             _draw(f"heatmap-{metric}", partial(_heatmap, report, metric)))
        for metric, title in HEATMAP_METRICS.items()
    ] if layer_roles(report, matrices_only=True) else []
    if report.layers:
        plots.append(Plot("layer-drift", "Per-layer drift",
                          "‖ΔW‖/‖W‖ over every tensor of each layer (norms combined in quadrature).",
                          _draw("layer-drift", lambda: _layer_drift(report))))
    plots.append(Plot("spectra", "Singular-value spectra of the most changed modules",
                      "Top singular values of ΔW, log-log. Red dashes mark a rank cliff: σ drops by orders of "
                      "magnitude to the rounding floor, the signature of an exactly low-rank update. Orange dots mark "
                      "a knee: a step well above the spectrum's usual decay, a low-rank part on top of a dense "
                      "update.",
                      _draw("spectra", lambda: _spectra(report, n_spectra))))
    plots.append(Plot("histogram", "Relative change by role",
                      f"Modules of at least 1000 parameters that changed, stacked by role"
                      f"{f'; {n_identical} bit-identical tensors are not shown' if n_identical else ''}.",
                      _draw("histogram", lambda: _histogram(report))))
    return plots
