"""Command line: `modeldelta MODEL_A MODEL_B [-o out.json]`, `modeldelta demo`, `modeldelta inspect`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click

from modeldelta_mcp.engine.run import DEFAULT_MEMORY_BUDGET, EngineOptions
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.progress import Progress

OUTPUT_SUFFIXES = {".json", ".html", ".md"}


def _parse_bytes(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 256M, 1G)", param_hint="--memory-budget") from None


class _Progress:
    """A one-line progress bar on stderr: tensor i of N, bytes, ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        done, total, name, bytes_done, bytes_total = p.done, p.total, p.name, p.bytes_done, p.bytes_total
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.t0
        frac = bytes_done / bytes_total if bytes_total else done / max(1, total)
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        width = 24
        bar = "█" * int(frac * width) + "░" * (width - int(frac * width))
        short = name if len(name) <= 40 else "…" + name[-39:]
        line = (f"\r{bar} {done}/{total} tensors  {bytes_done / 1e6:,.0f}/{bytes_total / 1e6:,.0f} MB  "
                f"{elapsed:.0f}s  ETA {eta:.0f}s  {short:<40}")
        click.echo(line, err=True, nl=done == total)


def _fail(msg: str) -> None:
    click.echo(f"Error: {msg}", err=True)
    sys.exit(1)


def run_compare(model_a: str, model_b: str, output: str | None, top_k: int, top_n: int, token: str | None,
                quiet: bool, spectrum: str, device: str, memory_budget: int, use_cache: bool) -> None:
    from modeldelta_mcp.compare import compare, resolve_pair
    from modeldelta_mcp.render.json_report import render_json
    from modeldelta_mcp.render.text import render_text
    from modeldelta_mcp.store import ResultStore, atomic_write_text

    if output is not None and Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
        _fail(f"-o {output}: unknown output format, use .json (.html and .md arrive with the reports feature)")
    if output is not None and Path(output).suffix.lower() in {".html", ".md"}:
        _fail(f"-o {output}: HTML and Markdown reports are not built yet; use .json or no -o for the terminal")
    options = EngineOptions(top_k=top_k, spectrum=spectrum, device=device, memory_budget=memory_budget)
    if not quiet:
        click.echo(f"modeldelta: {model_a} → {model_b}", err=True)
    pair = resolve_pair(model_a, model_b, token=token, quiet=quiet)
    progress = _Progress(enabled=not quiet)

    store = ResultStore() if use_cache else None

    def work():
        return compare(pair, options, progress=progress, journal_root=store.root if store is not None else None)

    report = store.get_or_compute(pair.report_id(options), work) if store is not None else work()
    if output is None:
        click.echo(render_text(report, top_n=top_n))
    else:
        atomic_write_text(Path(output), render_json(report))
        if not quiet:
            click.echo(f"JSON report saved to {output}", err=True)


def run_demo(top_n: int) -> None:
    from modeldelta_mcp.demo import build_demo_pair

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="modeldelta-demo-") as tmp:
        click.echo("Building the demo pair (tiny Llama-named transformer, real gradient steps)...", err=True)
        build_demo_pair(Path(tmp))
        os.chdir(tmp)  # short relative specs ("base", "lora_merged") read better in the report
        try:
            for variant in ("full_finetune", "lora_merged"):
                click.echo(f"\n=== demo: base → {variant} ===\n")
                run_compare("base", variant, None, 20, top_n, None, True, "exact", "auto",
                            DEFAULT_MEMORY_BUDGET, use_cache=False)
        finally:
            os.chdir(cwd)


def run_inspect(model: str, token: str | None) -> None:
    from modeldelta_mcp.inspect import inspect_checkpoint

    click.echo(inspect_checkpoint(model, token=token).model_dump_json(indent=2))


HELP = """Compare two model checkpoints and diagnose how B was made from A.

\b
  modeldelta MODEL_A MODEL_B [-o report.json]   compare (hub ids, local dirs or files)
  modeldelta demo                               a built-in example pair, no network
  modeldelta inspect MODEL                      headers only: tensors, dtypes, parameters
"""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_a")
@click.argument("model_b", required=False)
@click.option("-o", "--output", default=None, help="Output file (.json). Omit for the terminal table.")
@click.option("--top-k", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="Top singular values kept per module.")
@click.option("--top-n", default=20, show_default=True, type=click.IntRange(1), help="Modules in the text table.")
@click.option("--token", default=None, help="Hugging Face token (or set HF_TOKEN).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--spectrum", type=click.Choice(["exact", "fast", "off"]), default="exact", show_default=True,
              help="exact: all singular values; fast: top-k estimate; off: norms only.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--memory-budget", default=f"{DEFAULT_MEMORY_BUDGET // 1024**2}M", show_default=True,
              help="Engine working set (delta blocks in flight and Gram matrices); peak memory ≈ this + ~250 MB.")
@click.option("--no-cache", is_flag=True, help="Recompute even when the result store has this pair.")
def main_command(model_a: str, model_b: str | None, output: str | None, top_k: int, top_n: int, token: str | None,
                 quiet: bool, spectrum: str, device: str, memory_budget: str, no_cache: bool) -> None:
    try:
        if model_a == "demo" and model_b is None:
            run_demo(top_n)
            return
        if model_a == "inspect" and model_b is not None:
            run_inspect(model_b, token)
            return
        if model_b is None:
            raise click.UsageError("MODEL_B is required (or use `modeldelta demo`)")
        run_compare(model_a, model_b, output, top_k, top_n, token, quiet, spectrum, device,
                    _parse_bytes(memory_budget), use_cache=not no_cache)
    except ModelDeltaError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")


def main() -> None:
    main_command()


if __name__ == "__main__":
    main()
