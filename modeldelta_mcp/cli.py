"""Command line: a command group (`compare`, `many`, `find-base`, `report`, `demo`, `inspect`, `store`);
`modeldelta A B` means `modeldelta compare A B`."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, get_args

import anyio
import click
from pydantic import BaseModel

from modeldelta_mcp.engine.run import DEFAULT_MEMORY_BUDGET, EngineOptions
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ComparisonReport, ManySortKey
from modeldelta_mcp.progress import Progress

if TYPE_CHECKING:
    from modeldelta_mcp.select import TensorFilter
    from modeldelta_mcp.selection.executors import Executor
    from modeldelta_mcp.service import ReportService

FORMAT_LABELS = {"json": "JSON", "md": "Markdown", "html": "HTML", "text": "Text"}


def _parse_bytes(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 256M, 1G)", param_hint="--memory-budget") from None


class ProgressBar:
    """A rich progress bar on stderr (tensor i of N, bytes, ETA), drawn only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        from rich import progress as rp
        from rich.console import Console

        self.bar: rp.Progress | None = None
        if enabled:
            self.bar = rp.Progress(rp.BarColumn(), rp.TextColumn("{task.fields[tensors]} tensors"), rp.DownloadColumn(),
                                   rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn(),
                                   rp.TextColumn("{task.fields[tensor]}"), console=Console(stderr=True))
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    async def __call__(self, p: Progress) -> None:
        if self.bar is None or p.message:  # waiting for another process: no tensor count to draw yet
            return
        short = p.name if len(p.name) <= 40 else "…" + p.name[-39:]
        tensors = f"{p.done}/{p.total}"
        if self.task is None:
            self.task = self.bar.add_task("compare", total=p.bytes_total or p.total, tensors=tensors, tensor=short)
        self.bar.update(self.task, completed=p.bytes_done if p.bytes_total else p.done, tensors=tensors,
                        tensor=short)


def _fail(msg: str) -> NoReturn:
    click.echo(f"Error: {msg}", err=True)
    sys.exit(1)


@contextmanager
def _user_errors() -> Iterator[None]:
    """A bad input or an interrupt ends the command with one line on stderr, never a traceback."""
    try:
        yield
    except ModelDeltaError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")


T = TypeVar("T")


def with_service(work: Callable[[ReportService, ProgressBar], Awaitable[T]], *, token: str | None = None,
                 quiet: bool = True, executor: Executor | None = None) -> T:
    """Run `work` against a report service over the result store, with a progress bar on a terminal."""
    from modeldelta_mcp.service import ReportService
    from modeldelta_mcp.store import ResultStore

    async def run() -> T | ModelDeltaError:
        with ProgressBar(enabled=not quiet and sys.stderr.isatty()) as bar:
            async with ReportService.open(ResultStore(), token=token, quiet=quiet, executor=executor) as service:
                try:
                    return await work(service, bar)
                except ModelDeltaError as exc:
                    return exc  # raised below: leaving the service's task group would wrap it in an ExceptionGroup

    outcome = anyio.run(run)
    if isinstance(outcome, ModelDeltaError):
        raise outcome
    return outcome


def compute_report(model_a: str | None, model_b: str, options: EngineOptions, *, token: str | None = None,
                   quiet: bool = True, use_store: bool = True, selection: TensorFilter | None = None,
                   download: bool = False, executor: Executor | None = None) -> ComparisonReport:
    """One comparison through the report service (the store, unless `use_store` is False)."""
    return with_service(lambda service, bar: service.report_for_pair(
        model_a, model_b, options, sink=bar, use_store=use_store, selection=selection, download=download),
        token=token, quiet=quiet, executor=executor)


def use_color() -> bool:
    """ANSI colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def write_output(report: ComparisonReport, output: str | None, top_n: int, quiet: bool) -> None:
    """The terminal table, or the report written (atomically) in the format of the output file's suffix."""
    from modeldelta_mcp.render import format_for_path, render_report
    from modeldelta_mcp.store import atomic_write_text

    if output is None:
        click.echo(render_report(report, "text", top_n=top_n, color=use_color()))
        return
    fmt = format_for_path(output)
    atomic_write_text(Path(output), render_report(report, fmt, top_n=top_n))
    if not quiet:
        click.echo(f"{FORMAT_LABELS[fmt]} report saved to {output}", err=True)


def run_compare(model_a: str | None, model_b: str, output: str | None, top_n: int, options: EngineOptions,
                token: str | None = None, quiet: bool = False, use_store: bool = True,
                selection: TensorFilter | None = None, download: bool = False,
                executor: Executor | None = None) -> None:
    from modeldelta_mcp.render import format_for_path

    if output is not None:
        format_for_path(output)  # an unknown suffix fails before the comparison, not after
    if not quiet:
        click.echo(f"modeldelta: {model_a or '(the base B names)'} → {model_b}", err=True)
    report = compute_report(model_a, model_b, options, token=token, quiet=quiet, use_store=use_store,
                            selection=selection, download=download, executor=executor)
    if report.base_inferred is not None and not quiet:
        click.echo(f"base {report.base_inferred.model_a}: from {report.base_inferred.detail}", err=True)
    write_output(report, output, top_n, quiet)


def executor_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--executor / --ray-address / --ray-workers (docs/scale-out.md)."""
    fn = click.option("--ray-workers", type=click.IntRange(1), default=None,
                      help="Workers of a local Ray instance (default: one per core); with --ray-address, at most "
                           "this many of the cluster's.")(fn)
    fn = click.option("--ray-address", default=None,
                      help="An existing Ray cluster (HOST:6379, or ray://HOST:10001); default: a local instance.")(fn)
    return click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                        help="ray: spread the work over a Ray cluster (pip install 'modeldelta-mcp[ray]').")(fn)


def make_executor(name: str, address: str | None, workers: int | None) -> Executor | None:
    from modeldelta_mcp.selection.executors import make_executor as make

    if name == "local" and workers is not None:
        raise ModelDeltaError("--ray-workers needs --executor ray")
    return None if name == "local" and not address else make(name, address, workers)


class DefaultToCompare(click.Group):
    """`modeldelta A B ...` runs `compare A B ...`: anything that is not a subcommand (or the group's help)
    starts a comparison. `modeldelta compare inspect demo` compares directories named like subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["compare", *args]
        return super().parse_args(ctx, args)


HELP = """Compare two model checkpoints and diagnose how B was made from A.

\b
  modeldelta MODEL_A MODEL_B [-o report.html]   compare (hub ids, local dirs or files)
  modeldelta MODEL_B [...]                      compare with the base B's card or adapter config names
  modeldelta compare MODEL_A MODEL_B [...]      the same, for paths named like a command
  modeldelta many BASE C1 C2 ...                rank candidates against one base (one pass over BASE)
  modeldelta find-base MODEL P1 P2 ...          which of the pool MODEL was derived from
  modeldelta report SOURCE [-o report.md]       render a stored report (id or report.json)
  modeldelta demo                               a built-in example pair, no network
  modeldelta inspect MODEL                      headers only: tensors, dtypes, parameters
  modeldelta store list | prune                 the result store: what it holds, removing old reports
"""
CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(cls=DefaultToCompare, help=HELP, context_settings=CONTEXT)
def main_command() -> None:
    pass


@main_command.command("compare", context_settings=CONTEXT)
@click.argument("model_a")
@click.argument("model_b", required=False)
@click.option("-o", "--output", default=None,
              help="Output file; its suffix picks the format (.json, .md, .html, .txt). Omit for the terminal table.")
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
@click.option("--include", multiple=True, help="Compare only tensors whose name matches this glob (repeatable; "
              "`*` crosses dots, e.g. '*.self_attn.q_proj.*').")
@click.option("--exclude", multiple=True, help="Leave out tensors whose name matches this glob (repeatable).")
@click.option("--layers", default=None, help="Compare only these layers, e.g. 0-7,20.")
@click.option("--download", is_flag=True, help="Hub: download the weight shards (kept in the hub cache) instead "
              "of streaming the selected tensors by range reads.")
@executor_options
def compare_command(model_a: str, model_b: str | None, output: str | None, top_k: int, top_n: int,
                    token: str | None, quiet: bool, spectrum: str, device: str, memory_budget: str, no_cache: bool,
                    include: tuple[str, ...], exclude: tuple[str, ...], layers: str | None, download: bool,
                    executor: str, ray_address: str | None, ray_workers: int | None) -> None:
    """Compare MODEL_A with MODEL_B: hub ids (org/name[@rev]), local directories or weight files. With
    MODEL_B alone, the base is the one its model card (base_model) or adapter config names."""
    from modeldelta_mcp.select import TensorFilter

    options = EngineOptions(top_k=top_k, spectrum=spectrum, device=device,  # type: ignore[arg-type]  # click.Choice
                            memory_budget=_parse_bytes(memory_budget))
    first: str | None = model_a
    if model_b is None:  # `modeldelta B`
        first, model_b = None, model_a
    with _user_errors():
        selection = TensorFilter.of(include, exclude, layers)
        run_compare(first, model_b, output, top_n, options, token=token, quiet=quiet, use_store=not no_cache,
                    selection=selection, download=download, executor=make_executor(executor, ray_address, ray_workers))


def _write_answer(answer: BaseModel, text: str, output: str | None, quiet: bool) -> None:
    """The answer's text on stdout, or its JSON (the MCP tool's structuredContent) in `output`."""
    from modeldelta_mcp.store import atomic_write_text

    if output is None:
        click.echo(text)
        return
    if Path(output).suffix.lower() != ".json":
        raise ModelDeltaError(f"-o {output}: this answer is written as .json (or printed as text without -o)")
    atomic_write_text(Path(output), answer.model_dump_json(indent=1))
    if not quiet:
        click.echo(f"JSON answer saved to {output}", err=True)


def _engine_options(top_k: int, spectrum: str, device: str, memory_budget: str) -> EngineOptions:
    return EngineOptions(top_k=top_k, spectrum=spectrum, device=device,  # type: ignore[arg-type]  # click.Choice
                         memory_budget=_parse_bytes(memory_budget))


def engine_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The engine and store options shared by `many` and `find-base`."""
    fn = executor_options(fn)
    fn = click.option("--memory-budget", default=f"{DEFAULT_MEMORY_BUDGET // 1024**2}M", show_default=True,
                      help="Engine working set.")(fn)
    fn = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)(fn)
    fn = click.option("--spectrum", type=click.Choice(["exact", "fast", "off"]), default="exact", show_default=True,
                      help="exact: all singular values; fast: top-k estimate; off: norms only.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")(fn)
    fn = click.option("--token", default=None, help="Hugging Face token (or set HF_TOKEN).")(fn)
    fn = click.option("--top-k", default=20, show_default=True, type=click.IntRange(1, 10_000),
                      help="Top singular values kept per module.")(fn)
    return click.option("-o", "--output", default=None, help="Write the answer as JSON (.json); omit for text.")(fn)


@main_command.command("many", context_settings=CONTEXT)
@click.argument("base")
@click.argument("candidates", nargs=-1, required=True)
@click.option("--sort-by", type=click.Choice(get_args(ManySortKey)), default="mean_relative_change",
              show_default=True, help="Column of the ranking (closest to BASE first; oq highest first).")
@click.option("--no-cache", is_flag=True, help="Recompute every candidate, neither reading nor writing the store.")
@click.option("--include", multiple=True, help="Compare only tensors whose name matches this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Leave out tensors whose name matches this glob (repeatable).")
@click.option("--layers", default=None, help="Compare only these layers, e.g. 0-7,20.")
@engine_flags  # its -o: .json (the answer), .md or .html (the ranking table and the candidates' plot), .txt
def many_command(base: str, candidates: tuple[str, ...], sort_by: str, no_cache: bool, include: tuple[str, ...],
                 exclude: tuple[str, ...], layers: str | None, output: str | None, top_k: int, token: str | None,
                 quiet: bool, spectrum: str, device: str, memory_budget: str, executor: str,
                 ray_address: str | None, ray_workers: int | None) -> None:
    """Compare every candidate with BASE in one pass over BASE (each BASE tensor read once): a ranking table,
    and every candidate's full report in the store (then `modeldelta BASE Ci` answers at once)."""
    from modeldelta_mcp import answers
    from modeldelta_mcp.render import format_for_path
    from modeldelta_mcp.render.many import render_many
    from modeldelta_mcp.selection.many import compare_many
    from modeldelta_mcp.store import atomic_write_text

    options = _engine_options(top_k, spectrum, device, memory_budget)
    with _user_errors():
        from modeldelta_mcp.select import TensorFilter

        fmt = format_for_path(output) if output is not None else None  # a bad suffix fails before the work
        selection = TensorFilter.of(include, exclude, layers)
        where = make_executor(executor, ray_address, ray_workers)
        if not quiet:
            click.echo(f"modeldelta: {base} → {len(candidates)} candidates", err=True)
        answer = with_service(lambda service, bar: compare_many(
            service, base, list(candidates), options, sort_by=sort_by, sink=bar, executor=where,
            use_store=not no_cache, selection=selection), token=token, quiet=quiet, executor=where)
        if output is None or fmt is None:
            click.echo(answers.compare_many_text(answer))
            return
        atomic_write_text(Path(output), render_many(answer, fmt))
        if not quiet:
            click.echo(f"{FORMAT_LABELS[fmt]} ranking saved to {output}", err=True)


@main_command.command("find-base", context_settings=CONTEXT)
@click.argument("model")
@click.argument("pool", nargs=-1, required=True)
@engine_flags
def find_base_command(model: str, pool: tuple[str, ...], output: str | None, top_k: int, token: str | None,
                      quiet: bool, spectrum: str, device: str, memory_budget: str, executor: str,
                      ray_address: str | None, ray_workers: int | None) -> None:
    """Which checkpoint of POOL was MODEL derived from? A cheap screen of every pool entry (a few sampled
    matrices), then the exact comparison with the winner only."""
    from modeldelta_mcp import answers
    from modeldelta_mcp.selection.many import find_base

    options = _engine_options(top_k, spectrum, device, memory_budget)
    with _user_errors():
        where = make_executor(executor, ray_address, ray_workers)
        answer = with_service(lambda service, bar: find_base(service, model, list(pool), options, sink=bar,
                                                             executor=where),
                              token=token, quiet=quiet, executor=where)
        _write_answer(answer, answers.find_base_text(answer), output, quiet)


def load_report(source: str) -> ComparisonReport:
    """A stored report: a report.json file, or a report id from the result store. Nothing is recomputed."""
    from pydantic import ValidationError

    from modeldelta_mcp.store import ResultStore, is_report_id

    path = Path(source).expanduser()
    if path.is_file():
        try:
            return ComparisonReport.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise ModelDeltaError(f"{source}: not a modeldelta report ({first['msg']}{f' at {where}' if where else ''})"
                                  ) from None
        except OSError as exc:
            raise ModelDeltaError(f"{source}: cannot read ({exc.strerror})") from None
    if is_report_id(source):
        store = ResultStore()
        report = store.get(source)
        if report is None:
            raise ModelDeltaError(f"report {source}: not in the result store at {store.root} "
                                  "(MODELDELTA_CACHE_DIR); compare the pair again or pass a report.json")
        return report
    raise ModelDeltaError(f"{source}: neither a report.json file nor a report id (16 hex characters)")


@main_command.command("report", context_settings=CONTEXT)
@click.argument("source")
@click.option("-o", "--output", default=None,
              help="Output file; its suffix picks the format (.html, .md, .json, .txt). Omit for the terminal table.")
@click.option("--top-n", default=20, show_default=True, type=click.IntRange(1),
              help="Modules in the terminal and Markdown tables.")
@click.option("-q", "--quiet", is_flag=True, help="No confirmation on stderr.")
def report_command(source: str, output: str | None, top_n: int, quiet: bool) -> None:
    """Render a stored report (a report id from the store, or a report.json) without recomputing."""
    from modeldelta_mcp.render import format_for_path

    with _user_errors():
        if output is not None:
            format_for_path(output)  # an unknown suffix fails before anything is read
        write_output(load_report(source), output, top_n, quiet)


@main_command.command("demo", context_settings=CONTEXT)
@click.option("--top-n", default=20, show_default=True, type=click.IntRange(1), help="Modules in the text table.")
def demo_command(top_n: int) -> None:
    """A built-in example pair (tiny transformer, its full fine-tune and a LoRA merge), no network."""
    from modeldelta_mcp.demo import build_demo_pair

    with _user_errors():
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory(prefix="modeldelta-demo-") as tmp:
            click.echo("Building the demo pair (tiny Llama-named transformer, real gradient steps)...", err=True)
            build_demo_pair(Path(tmp))
            os.chdir(tmp)  # short relative specs ("base", "lora_merged") read better in the report
            try:
                for variant in ("full_finetune", "lora_merged"):
                    click.echo(f"\n=== demo: base → {variant} ===\n")
                    run_compare("base", variant, None, top_n, EngineOptions(), quiet=True, use_store=False)
            finally:
                os.chdir(cwd)


@main_command.command("inspect", context_settings=CONTEXT)
@click.argument("model")
@click.option("--token", default=None, help="Hugging Face token (or set HF_TOKEN).")
def inspect_command(model: str, token: str | None) -> None:
    """What MODEL holds, from its file headers only: tensors, dtypes, parameters, layers, roles."""
    from modeldelta_mcp.inspection import inspect_checkpoint

    with _user_errors():
        click.echo(inspect_checkpoint(model, token=token).model_dump_json(indent=2))


@main_command.group("store", context_settings=CONTEXT)
def store_group() -> None:
    """The result store (--cache-dir, else $MODELDELTA_CACHE_DIR, else ~/.cache/modeldelta-mcp)."""


def _store_root(cache_dir: Path | None) -> Path:
    from modeldelta_mcp.store import default_cache_dir

    return cache_dir or default_cache_dir()


CACHE_DIR = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="The store directory.")


@store_group.command("list", context_settings=CONTEXT)
@CACHE_DIR
def store_list_command(cache_dir: Path | None) -> None:
    """Stored reports, oldest first: report_id, age, size, model A -> model B."""
    import time

    from modeldelta_mcp.store.maintenance import list_entries

    root = _store_root(cache_dir)
    entries = list_entries(root)
    now = time.time()
    for e in entries:
        days = (now - e.modified) / 86400
        click.echo(f"{e.report_id}  {days:6.1f}d  {e.bytes / 1024:8.1f} KB  {e.model_a or '?'} -> {e.model_b or '?'}")
    total = sum(e.bytes for e in entries)
    click.echo(f"{len(entries)} reports, {total / 1024**2:.1f} MB in {root}", err=True)


@store_group.command("prune", context_settings=CONTEXT)
@CACHE_DIR
@click.option("--older-than", default=None, help="Remove reports not written for this long: 30d, 12h, 90m.")
@click.option("--max-size", default=None, help="Then remove the oldest until the store holds at most this: 2G, 500M.")
@click.option("--all", "everything", is_flag=True, help="Remove every report.")
def store_prune_command(cache_dir: Path | None, older_than: str | None, max_size: str | None,
                        everything: bool) -> None:
    """Remove reports by age, by total size, or all (each removal atomic; a report being written is kept)."""
    from modeldelta_mcp.store.maintenance import parse_age, parse_size, prune

    if not (older_than or max_size or everything):
        raise click.UsageError("say what to remove: --older-than AGE, --max-size SIZE or --all")
    try:
        age = parse_age(older_than) if older_than else None
        size = parse_size(max_size) if max_size else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    root = _store_root(cache_dir)
    with _user_errors():
        try:
            done = prune(root, older_than=age, max_bytes=size, everything=everything)
        except OSError as exc:
            raise ModelDeltaError(f"{root}: cannot prune ({exc.strerror or type(exc).__name__})") from exc
    kept = f"; {len(done.skipped_locked)} being written, kept" if done.skipped_locked else ""
    click.echo(f"removed {len(done.reports)} reports and {done.other_files} other files, "
               f"{done.freed_bytes / 1024**2:.1f} MB freed{kept}", err=True)


def main() -> None:
    main_command()


if __name__ == "__main__":
    main()
