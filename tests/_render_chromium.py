"""Headless Chromium for the HTML report tests and the gallery: load a file, screenshot it, collect console lines.

Console messages and uncaught exceptions are read from Chromium's own log (`--enable-logging=stderr`), where
each one is a `CONSOLE` line; the report page logs nothing, so any such line is an error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CONSOLE = re.compile(r":CONSOLE[:(\]]")
# Tall enough for a whole report page; the screenshot is cropped to the content afterwards.
PAGE_HEIGHT = 9000


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class PageRun:
    console: list[str]
    screenshot: Path
    stderr: str


def render_page(html: Path, png: Path, width: int = 1280, height: int = PAGE_HEIGHT, timeout: float = 120) -> PageRun:
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="modeldelta-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND",  # a page that reaches out fails to load, visibly
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
               f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    console = [line for line in proc.stderr.splitlines() if _CONSOLE.search(line)]
    return PageRun(console, png, proc.stderr)


def crop_to_content(png: Path, margin: int = 24, palette: int | None = None) -> None:
    """Cut the empty page background below the last row that has content; `palette` colours (e.g. 128)
    store the screenshot as a palette PNG, a third of the size for a page of flat colours."""
    from PIL import Image

    with Image.open(png) as img:
        rgb = img.convert("RGB")
    background = rgb.getpixel((rgb.width - 1, rgb.height - 1))
    diff = Image.new("RGB", rgb.size, background)
    from PIL import ImageChops

    box = ImageChops.difference(rgb, diff).getbbox()
    if box is not None:
        rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + margin)))
    if palette is not None:
        rgb.quantize(colors=palette, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(png, optimize=True)
    else:
        rgb.save(png, optimize=True)
