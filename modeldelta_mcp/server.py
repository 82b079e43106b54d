"""The MCP server: seven read-only tools and the report resources (JSON, HTML, Markdown) over one engine and one
result store.

`modeldelta-mcp` serves stdio (what MCP clients launch); `--transport streamable-http` serves HTTP.
Built on the official SDK's MCPServer: typed tool signatures give the input schemas, the pydantic
answer models (models.py) give the output schemas, and every answer also carries a short Markdown text.
"""

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import anyio.to_thread
import click
from mcp.server.mcpserver import Context, ListRoots, MCPServer, Resolve
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp_types import CallToolResult, ListRootsResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from modeldelta_mcp import __version__, answers
from modeldelta_mcp.access import AllowedRoots, check_spec, default_roots, roots_from_uris
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.http_auth import TOKEN_ENV, auth_for, read_token
from modeldelta_mcp.limits import ComparisonQueue, default_max_concurrent
from modeldelta_mcp.models import (
    CompareManyAnswer,
    CompareSummary,
    ComparisonReport,
    DiagnosisAnswer,
    FindBaseAnswer,
    InspectAnswer,
    LayerProfileAnswer,
    ManySortKey,
    Role,
    SpectrumMode,
    TopModulesAnswer,
)
from modeldelta_mcp.progress import Progress
from modeldelta_mcp.render import render_report
from modeldelta_mcp.select import TensorFilter
from modeldelta_mcp.service import ReportService
from modeldelta_mcp.store import REPORT_ID_PATTERN, ResultStore

# Seconds a comparison keeps running after its last waiting request was cancelled or timed out, so that
# the client can call again and join it instead of starting over. 0 stops the work at once.
DEFAULT_CANCEL_GRACE_S = 120.0

INSTRUCTIONS = """\
modeldelta answers "what changed between checkpoint A and checkpoint B, and how was B made from A?"
from the weights alone. Start with compare_checkpoints(model_a, model_b): it reads both checkpoints once
(seconds for small models, minutes for 7B on CPU) and returns a compact summary with a report_id. The other
tools (get_diagnosis, top_changed_modules, layer_profile) answer instantly from the stored result, given the
same pair or the report_id. If a call times out, call it again with the same arguments: it joins the running
comparison. inspect_checkpoint reads headers only and is always cheap. The whole report is a resource:
modeldelta://reports/{report_id} (JSON), .../html (a self-contained page with plots), .../md (Markdown).
To rank several derivatives of one base, call compare_many(base, candidates) (one pass over the base, every
report stored); to find which of several checkpoints a model was made from, call find_base(model, pool) (a
cheap screen, then one exact comparison)."""

ModelSpec = Annotated[str, Field(
    min_length=1,
    description="Hugging Face repo id ('org/name' or 'org/name@revision'), a local checkpoint directory or "
                ".safetensors/.bin/.gguf file (inside the server's allowed roots), or a PEFT adapter directory.",
)]
OptionalSpec = Annotated[str | None, Field(
    description="Like model_a/model_b of compare_checkpoints. Give model_b (with model_a, or alone when B's model "
                "card or adapter config names its base), or report_id.",
)]
BaseSpec = Annotated[str | None, Field(
    description="The base A, like model_b. Omit it when B's model card (base_model) or PEFT adapter config names "
                "its base: the answer's base_inferred then says which and where it came from.",
)]
Include = Annotated[list[str] | None, Field(
    description="Compare only tensors whose name matches one of these globs (fnmatch, `*` crosses dots, e.g. "
                "'*.self_attn.q_proj.*'). A hub checkpoint is then streamed: only those tensors are fetched.",
)]
Exclude = Annotated[list[str] | None, Field(description="Leave out tensors whose name matches one of these globs.")]
Layers = Annotated[str | None, Field(description="Compare only these layers, e.g. '0-7,20' (embeddings and other "
                                                 "tensors outside a layer are then left out).")]
ReportId = Annotated[
    Annotated[str, StringConstraints(pattern=REPORT_ID_PATTERN)] | None,
    Field(description="report_id returned by compare_checkpoints (16 hex characters); replaces model_a/model_b."),
]
TopK = Annotated[int, Field(ge=1, le=1000, description="Singular values kept per module in the report.")]
Spectrum = Annotated[SpectrumMode, Field(
    description="exact: all singular values (default); fast: top-k estimate, for very large pairs; "
                "off: norms and cosines only (fastest, no rank findings).",
)]
TopN = Annotated[int, Field(ge=1, le=1000, description="How many modules to return.")]
SortBy = Annotated[answers.SortKey, Field(
    description="Metric to rank by. Most changed first: descending, except cosine_sim and sparsity (ascending).",
)]
# A compare_many or find_base call over more checkpoints than this is a batch job for the CLI, not a tool call.
MAX_CANDIDATES = 256
Candidates = Annotated[list[Annotated[str, Field(min_length=1)]], Field(
    min_length=1, max_length=MAX_CANDIDATES,
    description="Candidate checkpoints (like model_b of compare_checkpoints), each compared with the base.")]
Pool = Annotated[list[Annotated[str, Field(min_length=1)]], Field(
    min_length=1, max_length=MAX_CANDIDATES,
    description="Possible bases (hub ids or local checkpoints) MODEL may have been derived from.")]
ManySortBy = Annotated[ManySortKey, Field(
    description="Ranking column: mean_relative_change (closest to the base first), mean_cosine_sim (most similar "
                "first), oq (highest first), profile_tag (identical to extreme), method, candidate.")]
RoleFilter = Annotated[Role | None, Field(description="Only modules of this role (e.g. attn_o, mlp_down, embed).")]

# Parameter groups shared by several tools (server.tool composes the signatures from them).
PAIR_PARAMS = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=kind)
               for name, kind in (("model_a", OptionalSpec), ("model_b", OptionalSpec), ("report_id", ReportId))]
FILTER_PARAMS = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=kind)
                 for name, kind in (("include", Include), ("exclude", Exclude), ("layers", Layers))]
# Parameters of a tool's answer function that the server fills (never in the input schema).
SERVED = frozenset({"ctx", "access", "selection", "report"})

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True, destructive_hint=False,
                            idempotent_hint=True)


@dataclass
class ServerConfig:
    allow_paths: list[Path] = field(default_factory=list)
    cache_dir: Path | None = None
    cancel_grace: float = DEFAULT_CANCEL_GRACE_S
    # MCPServer keyword arguments of HTTP auth (http_auth.auth_for); empty on stdio and tokenless loopback.
    auth: dict[str, Any] = field(default_factory=dict)
    # Comparisons computed at once; the others queue (limits.py). None: limits.default_max_concurrent().
    max_concurrent: int | None = None
    executor: str = "local"  # where comparisons run: this process, or "ray" (docs/scale-out.md)
    ray_address: str | None = None
    ray_workers: int | None = None


@dataclass
class AppState:
    service: ReportService
    roots: list[Path]


class ModelDeltaMCP(MCPServer[AppState]):
    """MCPServer whose argument errors read as one line (the SDK's span several) and that refuses unknown
    arguments (a misspelt `top_n` silently falling back to the default would mislead the caller)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_arguments: dict[str, list[str]] = {}

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[AppState, Any] | None = None) -> Any:
        expected = self.tool_arguments.get(name)
        unknown = sorted(set(arguments) - set(expected)) if expected is not None else []
        if unknown:
            raise ToolError(f"{name}: unknown argument(s) {', '.join(unknown)}; expected {', '.join(expected or [])}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                raise ToolError(f"{name}: invalid arguments: {_one_line(cause)}") from cause
            raise


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@contextmanager
def _tool_errors() -> Iterator[None]:
    """A user-facing failure becomes a tool error (isError) with its one-line reason."""
    try:
        yield
    except ModelDeltaError as exc:
        raise ToolError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


# Tool parameters filled by the server, not by the caller.
INJECTED = {"ctx", "client_roots"}


def _tool(server: ModelDeltaMCP, title: str, annotations: ToolAnnotations) -> Callable[[Any], Any]:
    """server.tool with the docstring dedented: the description is what a model reads to pick a tool."""

    def decorator(fn: Any) -> Any:
        server.add_tool(fn, title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)
        server.tool_arguments[fn.__name__] = [p for p in inspect.signature(fn).parameters if p not in INJECTED]
        return fn

    return decorator


def _result(answer: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=answer.model_dump(mode="json"))


def build_server(config: ServerConfig | None = None) -> ModelDeltaMCP:
    config = config or ServerConfig()
    static_roots = default_roots(config.allow_paths)

    executor = None
    if config.executor != "local":
        from modeldelta_mcp.selection.executors import make_executor

        executor = make_executor(config.executor, config.ray_address, config.ray_workers)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        limiter = ComparisonQueue(config.max_concurrent or default_max_concurrent())
        async with ReportService.open(ResultStore(config.cache_dir), cancel_grace=config.cancel_grace,
                                      limiter=limiter, executor=executor) as service:
            yield AppState(service=service, roots=static_roots)

    server = ModelDeltaMCP("modeldelta", title="modeldelta: checkpoint diff and diagnosis",
                           instructions=INSTRUCTIONS, version=__version__, lifespan=lifespan, log_level="WARNING",
                           **config.auth)

    # ---- allowed roots: the static ones, plus the client's when a local path needs them ----------

    def _needs_client_roots(ctx: Context, specs: list[str | None]) -> ListRoots | None:
        outside = False
        for spec in specs:
            try:
                if spec:
                    check_spec(spec, static_roots, "model")  # a hub id passes: it is not a path
            except ModelDeltaError:
                outside = True
        caps = ctx.client_capabilities
        return ListRoots() if outside and caps is not None and caps.roots is not None else None

    def roots_for_pair(ctx: Context, model_a: str | None, model_b: str | None,
                       report_id: str | None) -> ListRoots | None:
        specs = [model_a, model_b]
        if report_id and not (model_a and model_b):
            ref = _state(ctx).service.pair_of(report_id)
            if ref is not None:
                specs = [ref.model_a, ref.model_b]
        return _needs_client_roots(ctx, specs)

    def roots_for_compare(ctx: Context, model_a: str | None, model_b: str) -> ListRoots | None:
        return _needs_client_roots(ctx, [model_a, model_b])

    def roots_for_model(ctx: Context, model: str) -> ListRoots | None:
        return _needs_client_roots(ctx, [model])

    def roots_for_many(ctx: Context, base: str, candidates: list[str]) -> ListRoots | None:
        return _needs_client_roots(ctx, [base, *candidates])

    def roots_for_pool(ctx: Context, model: str, pool: list[str]) -> ListRoots | None:
        return _needs_client_roots(ctx, [model, *pool])

    def _state(ctx: Context) -> AppState:
        # The tools take a bare `Context` (the SDK injects it by that annotation); the lifespan above made it.
        return cast(AppState, ctx.request_context.lifespan_context)

    def _access(ctx: Context, client: ListRootsResult | None) -> AllowedRoots:
        roots = _state(ctx).roots
        return AllowedRoots(roots + (roots_from_uris(str(r.uri) for r in client.roots) if client else []))

    # ---- progress: the running comparison's, as MCP progress notifications ------------------------

    def _sink(ctx: Context) -> Callable[[Progress], Any]:
        async def sink(p: Progress) -> None:
            try:
                if p.message:  # queued, or waiting for another process: no tensor count yet
                    await ctx.report_progress(0, None, p.message)
                else:
                    await ctx.report_progress(p.done, p.total, f"tensor {p.done}/{p.total}: {p.name}")
            except Exception:  # a client that went away must not fail the job others wait on
                pass

        return sink

    # ---- tools ------------------------------------------------------------------------------------
    # Each tool is written as `answer(own parameters, served ones) -> answer model`; `tool` below composes its
    # signature (the SDK reads the input schema from it) from parameter groups written once: the pair or
    # report_id of the reading tools, the tensor filter, and what the server fills in (ctx, client roots).

    def tool(title: str, text: Callable[[Any], str], roots: Callable[..., ListRoots | None], *,
             reads_report: bool = False, filters: bool = False) -> Callable[[Callable[..., Any]], Any]:
        """Register `answer` as a tool. Served parameters, by name: `ctx`, `access` (allowed roots with the
        client's), `selection` (the tensor filter) and `report` (reading tools: found by report_id or pair)."""

        def decorator(answer: Callable[..., Any]) -> Any:
            own = inspect.signature(answer, eval_str=True)
            mine = [p for p in own.parameters.values() if p.name not in SERVED]
            leading = [*PAIR_PARAMS, *FILTER_PARAMS] if reads_report else []
            trailing = FILTER_PARAMS if filters and not reads_report else []
            injected = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context),
                        inspect.Parameter("client_roots", inspect.Parameter.KEYWORD_ONLY,
                                          annotation=Annotated[ListRootsResult | None, Resolve(roots)])]

            async def call(**kwargs: Any) -> CallToolResult:
                ctx, client_roots = kwargs.pop("ctx"), kwargs.pop("client_roots")
                with _tool_errors():  # a bad filter or path is the caller's error, one line
                    access = _access(ctx, client_roots)
                    served: dict[str, Any] = {"ctx": ctx, "access": access}
                    if reads_report or filters:
                        served["selection"] = TensorFilter.of(*(kwargs.pop(p.name, None) for p in FILTER_PARAMS))
                    if reads_report:
                        pair = [kwargs.pop(p.name, None) for p in PAIR_PARAMS]
                        served["report"] = await _state(ctx).service.report(
                            *pair, access=access, sink=_sink(ctx), selection=served["selection"])
                    result = answer(**kwargs, **{k: v for k, v in served.items() if k in own.parameters})
                    if inspect.isawaitable(result):
                        result = await result
                    return _result(result, text(result))

            signature = inspect.Signature([*leading, *mine, *trailing, *injected],
                                          return_annotation=Annotated[CallToolResult, own.return_annotation])
            call.__signature__ = signature  # type: ignore[attr-defined]
            call.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
            call.__annotations__["return"] = signature.return_annotation
            call.__name__ = call.__qualname__ = answer.__name__
            call.__doc__ = answer.__doc__
            return _tool(server, title=title, annotations=READ_ONLY)(call)

        return decorator

    @tool("Compare two checkpoints", answers.summary_text, roots_for_compare, filters=True)
    async def compare_checkpoints(model_b: ModelSpec, model_a: BaseSpec = None, top_k: TopK = 20,
                                  spectrum: Spectrum = "exact", *, ctx: Context, access: AllowedRoots,
                                  selection: TensorFilter) -> CompareSummary:
        """How was checkpoint B made from checkpoint A? Compares every tensor (relative change, cosine,
        sparsity, exact singular-value spectrum) and diagnoses the method: fine-tune, LoRA merge, precision
        change, quantization round-trip, pruning, noise, frozen layers, resized vocabulary, unrelated models.

        Returns a compact summary: report_id, profile tag, method, findings with evidence, totals and the
        10 most changed modules. Cost: reads both checkpoints once (seconds for small models, minutes for
        7B on CPU) and sends progress notifications; the result is stored, so a repeated call or any other
        tool on the same pair answers instantly. If the call times out, call it again with the same
        arguments: it joins the comparison already running. Next: get_diagnosis (full evidence),
        top_changed_modules (per-tensor detail), layer_profile (per-layer heatmap), or read report_uri.
        For part of a model (e.g. the O/Q ratio of a 70B pair from its q and o projections only), pass
        include/exclude/layers: hub weights are then fetched tensor by tensor, nothing else downloaded.
        """
        from modeldelta_mcp.engine import EngineOptions

        report = await _state(ctx).service.report_for_pair(
            model_a, model_b, EngineOptions(top_k=top_k, spectrum=spectrum), access=access, sink=_sink(ctx),
            selection=selection)
        return answers.summary(report)

    @tool("Diagnosis of a comparison", answers.diagnosis_text, roots_for_pair, reads_report=True)
    def get_diagnosis(report: ComparisonReport) -> DiagnosisAnswer:
        """The verdict on how B was made from A: profile tag (identical/surgical/standard/heavy/extreme),
        the method code (e.g. lora_merge, full_finetune, precision_change), a one-paragraph summary and every
        finding with its evidence. Give the report_id from compare_checkpoints, or the same model_a/model_b.
        Cheap when the pair was already compared (answers from the store); otherwise it runs the comparison
        first, like compare_checkpoints. Next: top_changed_modules or layer_profile to check the evidence.
        """
        return answers.diagnosis(report)

    @tool("Most changed modules", answers.top_modules_text, roots_for_pair, reads_report=True)
    def top_changed_modules(
        report: ComparisonReport,
        n: TopN = 20,
        sort_by: SortBy = "frob_norm_relative",
        role: RoleFilter = None,
        include_forensics: Annotated[bool, Field(
            description="Also return each module's fingerprint counters (about 2 KB per module).")] = False,
    ) -> TopModulesAnswer:
        """Which tensors changed most: the top n modules ranked by a metric, each with every metric of the
        report (relative change, cosine, sparsity, effective/stable rank, top singular values, dtypes,
        shapes; about 1 KB per module). Filter by role (attn_q, attn_o, mlp_down, embed, norm, ...). Give the
        report_id from compare_checkpoints, or the same model_a/model_b. Cheap when the pair was already compared.
        """
        return answers.top_modules(report, n, sort_by, role, include_forensics)

    @tool("Per-layer change profile", answers.layer_profile_text, roots_for_pair, reads_report=True)
    def layer_profile(report: ComparisonReport) -> LayerProfileAnswer:
        """Where in depth the change sits: for every layer and role (attn_q, attn_o, mlp_up, ...), the relative
        change, cosine similarity, effective rank and top-k energy concentration of its weight delta (heatmap
        data; frozen layers show 0). Give the report_id from compare_checkpoints, or the same model_a/model_b.
        Cheap when the pair was already compared.
        """
        return answers.layer_profile(report)

    @tool("Inspect one checkpoint", answers.inspect_text, roots_for_model)
    async def inspect_checkpoint(model: ModelSpec, *, ctx: Context, access: AllowedRoots) -> InspectAnswer:
        """What one checkpoint holds, from its file headers only (no tensor data read, always cheap for local
        files): architecture, weight files, tensor and parameter counts, dtypes, layers, tensors per role and
        the largest tensors. Use it to check a path or repo id before compare_checkpoints.
        """
        from modeldelta_mcp.inspection import describe

        return describe(await _state(ctx).service.resolve_one(model, access, subset=True))

    @tool("Rank candidates against one base", answers.compare_many_text, roots_for_many, filters=True)
    async def compare_many(base: ModelSpec, candidates: Candidates, top_k: TopK = 20, spectrum: Spectrum = "exact",
                           sort_by: ManySortBy = "mean_relative_change", *, ctx: Context, access: AllowedRoots,
                           selection: TensorFilter) -> CompareManyAnswer:
        """Which of these derivatives of one base stayed closest to it, or changed attention most? Compares
        every candidate with the base in ONE pass over the base (each base tensor is read once) and returns
        a ranking table: per candidate its profile tag, method, recipe, mean relative change, mean cosine,
        O/Q ratio, most changed roles and its report_id. A candidate that cannot be read (missing, corrupt,
        another architecture) gets a one-line error in its row; the others complete.

        Cost: like one compare_checkpoints per candidate, minus the repeated reading of the base; sends
        progress notifications. Every candidate's full report is stored, so get_diagnosis,
        top_changed_modules and layer_profile then answer instantly with the row's report_id, and a repeated
        call answers from the store. Rows run from closest to the base to farthest (sort_by
        mean_relative_change or mean_cosine_sim), oq highest first.
        """
        from modeldelta_mcp.engine import EngineOptions
        from modeldelta_mcp.selection.many import compare_many as run

        service = _state(ctx).service
        return await run(service, base, list(candidates), EngineOptions(top_k=top_k, spectrum=spectrum),
                         sort_by=sort_by, access=access, sink=_sink(ctx), executor=service.executor,
                         selection=selection)

    @tool("Find the base a checkpoint was made from", answers.find_base_text, roots_for_pool)
    async def find_base(model: ModelSpec, pool: Pool, top_k: TopK = 20, spectrum: Spectrum = "exact", *,
                        ctx: Context, access: AllowedRoots) -> FindBaseAnswer:
        """Which checkpoint of the pool was MODEL derived from? First a cheap screen reads a small sample of
        every pool entry (a row range of up to 12 mid-depth attention and MLP matrices, at most 1 MiB each):
        the weights' cosine tells related from unrelated (a model trained from another initialisation has
        cosine near 0), the relative change tells the parent (one step away) from a sibling fine-tune of the
        same parent (two steps). Then the exact comparison runs against the winner only.

        Returns decision found | none | ambiguous, the base (the pool entry as given, only when found), the
        margin (runner-up's distance over the nearest's), every candidate's screening figures and bytes read,
        most likely first, and the report_id of the exact comparison (base as A, MODEL as B).
        """
        from modeldelta_mcp.engine import EngineOptions
        from modeldelta_mcp.selection.many import find_base as run

        service = _state(ctx).service
        return await run(service, model, list(pool), EngineOptions(top_k=top_k, spectrum=spectrum), access=access,
                         sink=_sink(ctx), executor=service.executor)

    # ---- resource -----------------------------------------------------------------------------------

    async def _stored_report(report_id: str, ctx: Context) -> ComparisonReport:
        try:
            return await _state(ctx).service.report_for_id(report_id, access=AllowedRoots(_state(ctx).roots),
                                                           sink=_sink(ctx))
        except ModelDeltaError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    @server.resource("modeldelta://reports/{report_id}", name="report", title="Full comparison report",
                     mime_type="application/json")
    async def report_resource(report_id: str, ctx: Context) -> str:
        """The full ComparisonReport (every module, layer rows, diagnostics) as JSON (schemas/report.schema.json)."""
        return (await _stored_report(report_id, ctx)).model_dump_json(indent=2)

    @server.resource("modeldelta://reports/{report_id}/html", name="report_html", title="Comparison report (HTML)",
                     mime_type="text/html")
    async def report_html_resource(report_id: str, ctx: Context) -> str:
        """The report as one self-contained HTML page: header, findings as cards, heatmaps, spectra, module table."""
        report = await _stored_report(report_id, ctx)
        # matplotlib takes CPU seconds for a large report: off the event loop, which keeps serving other calls.
        return await anyio.to_thread.run_sync(partial(render_report, report, "html"))

    @server.resource("modeldelta://reports/{report_id}/md", name="report_md", title="Comparison report (Markdown)",
                     mime_type="text/markdown")
    async def report_md_resource(report_id: str, ctx: Context) -> str:
        """The report as GitHub Markdown: summary, findings with evidence, top modules, a per-layer table."""
        return render_report(await _stored_report(report_id, ctx), "md")

    return server


Transport = Literal["stdio", "streamable-http"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--transport", type=click.Choice(["stdio", "streamable-http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="streamable-http only.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="streamable-http only.")
@click.option("--allow-path", "allow_paths", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory whose checkpoints may be read (repeatable). Default: the working directory. "
                   "The Hugging Face cache and the client's declared roots are always allowed.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Result store directory. Default: $MODELDELTA_CACHE_DIR or ~/.cache/modeldelta-mcp.")
@click.option("--cancel-grace", type=click.FloatRange(0), default=DEFAULT_CANCEL_GRACE_S, show_default=True,
              help="Seconds a cancelled or timed-out comparison keeps running so a repeated call can join it.")
@click.option("--auth-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"streamable-http: file holding the bearer token every request must carry (or set "
                   f"${TOKEN_ENV}). Required for a --host other than 127.0.0.1, ::1 or localhost.")
@click.option("--max-concurrent", type=click.IntRange(1), default=None,
              help="Comparisons computed at once; more calls wait in a FIFO queue. Default: min(cores, a quarter "
                   "of the memory / 512 MB), at least 1 (docs/operations.md).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: spread every comparison over a Ray cluster (pip install 'modeldelta-mcp[ray]').")
@click.option("--ray-address", default=None, help="An existing Ray cluster (HOST:6379); default: a local instance.")
@click.option("--ray-workers", type=click.IntRange(1), default=None, help="Workers of a local Ray instance.")
def main_command(transport: Transport, host: str, port: int, allow_paths: tuple[Path, ...], cache_dir: Path | None,
                 cancel_grace: float, auth_token_file: Path | None, max_concurrent: int | None, executor: str,
                 ray_address: str | None, ray_workers: int | None) -> None:
    """MCP server: compare two model checkpoints and diagnose how B was made from A."""
    for p in allow_paths:
        if not p.expanduser().is_dir():
            raise click.BadParameter(f"{p}: not a directory", param_hint="--allow-path")
    auth: dict[str, Any] = {}
    if transport == "streamable-http":
        try:
            auth = auth_for(host, read_token(auth_token_file))
        except ModelDeltaError as exc:
            raise click.UsageError(str(exc)) from exc
    if executor == "local" and (ray_address or ray_workers):
        raise click.BadParameter("needs --executor ray", param_hint="--ray-address/--ray-workers")
    server = build_server(ServerConfig(allow_paths=list(allow_paths), cache_dir=cache_dir, cancel_grace=cancel_grace,
                                       auth=auth, max_concurrent=max_concurrent, executor=executor,
                                       ray_address=ray_address, ray_workers=ray_workers))
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)


def main() -> None:
    main_command()


if __name__ == "__main__":
    main()
