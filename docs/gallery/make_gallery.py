"""Rebuild docs/gallery: the demo pairs' HTML reports and a screenshot of each (headless Chromium).

    python docs/gallery/make_gallery.py [--extra NAME=REPORT.json ...]

The demo pairs are built exactly as `modeldelta demo` builds them (deterministic for a given torch) and
compared with the default options; `--extra` adds a stored report (e.g. the 0.5B benchmark pair's).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))  # the Chromium helper the HTML tests use

from _render_chromium import crop_to_content, find_chromium, render_page  # noqa: E402

from modeldelta_mcp.compare import compare, resolve_pair  # noqa: E402
from modeldelta_mcp.demo import build_demo_pair  # noqa: E402
from modeldelta_mcp.engine import EngineOptions  # noqa: E402
from modeldelta_mcp.models import ComparisonReport  # noqa: E402
from modeldelta_mcp.render import render_report  # noqa: E402

DEMO_VARIANTS = ("full_finetune", "lora_merged")
SCREEN_WIDTH = 1280
# Everything above the module table and the table's head; a 300-module table adds 5000 px of rows.
SCREEN_HEIGHT = 9000
SCREENSHOT_COLOURS = 128  # palette PNGs: flat page colours survive, the files shrink about 3x


def demo_reports() -> dict[str, ComparisonReport]:
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="modeldelta-gallery-") as tmp:
        build_demo_pair(Path(tmp))
        os.chdir(tmp)  # short relative specs, as `modeldelta demo` shows them
        try:
            return {v: compare(resolve_pair("base", v), EngineOptions()) for v in DEMO_VARIANTS}
        finally:
            os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=REPORT.json")
    parser.add_argument("--no-demo", action="store_true", help="only the --extra reports")
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("headless Chromium is needed for the screenshots (Debian: apt-get install chromium)")
    reports = {} if args.no_demo else demo_reports()
    for item in args.extra:
        name, path = item.split("=", 1)
        reports[name] = ComparisonReport.model_validate_json(Path(path).read_text())
    for name, report in reports.items():
        html = HERE / f"{name}.html"
        html.write_text(render_report(report, "html"), encoding="utf-8")
        run = render_page(html, HERE / f"{name}.png", width=SCREEN_WIDTH, height=SCREEN_HEIGHT)
        if run.console:
            sys.exit(f"{html}: console output {run.console}")
        crop_to_content(run.screenshot, palette=SCREENSHOT_COLOURS)
        print(f"{name}: {html.stat().st_size / 1024:.0f} KiB HTML, {run.screenshot.stat().st_size / 1024:.0f} KiB PNG")


if __name__ == "__main__":
    main()
