"""Checks shared by the stdio and HTTP end-to-end tests: one connected SDK Client in, assertions out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from _mcp_helpers import (
    CALL_TIMEOUT_S,
    TOOLS,
    Workspace,
    compute_events,
    schema,
    starts,
    validate,
    without_dialect,
)
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult


async def call(client: Client, tool: str, args: dict[str, Any], progress: list | None = None) -> CallToolResult:
    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append((done, total, message))

    return await client.call_tool(tool, args, read_timeout_seconds=CALL_TIMEOUT_S, progress_callback=on_progress)


def ok(result: CallToolResult, tool: str) -> dict[str, Any]:
    """A successful answer: text for text-only clients, structuredContent valid against schemas/<tool>."""
    assert not result.is_error, result.content
    assert result.content and result.content[0].type == "text" and result.content[0].text.strip()
    assert result.structured_content is not None
    validate(tool, result.structured_content)
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    text = result.content[0].text
    assert "\n" not in text.strip(), f"tool error is not one line: {text!r}"
    return text


async def check_listing(client: Client) -> None:
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(listed) == sorted(TOOLS)
    for name, tool in listed.items():
        assert tool.input_schema["type"] == "object" and tool.input_schema["properties"]
        assert "ctx" not in tool.input_schema["properties"] and "client_roots" not in tool.input_schema["properties"]
        # The published outputSchema is the checked-in schemas/<tool>.schema.json, minus the dialect line.
        assert tool.output_schema == without_dialect(schema(name))
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True and tool.annotations.open_world_hint is True
        assert len(tool.description or "") > 150, f"{name}: description too thin for a model choosing a tool"
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["modeldelta://reports/{report_id}",
                                                   "modeldelta://reports/{report_id}/html",
                                                   "modeldelta://reports/{report_id}/md"]


async def check_all_tools(client: Client, ws: Workspace, log: Path, top_k: int, spectrum: str) -> str:
    """compare (computes, with progress), then every other tool from the store; returns the report_id."""
    a, b = str(ws.model_a), str(ws.model_b)
    progress: list = []
    args = {"model_a": a, "model_b": b, "top_k": top_k, "spectrum": spectrum}
    summary = ok(await call(client, "compare_checkpoints", args, progress), "compare_checkpoints")
    rid = summary["report_id"]
    assert summary["report_uri"] == f"modeldelta://reports/{rid}"
    assert summary["counts"]["n_changed"] > 0 and summary["top_modules"]
    assert summary["top_modules"][0]["name"].startswith("encoder.layer.3.")
    assert summary["engine"]["top_k"] == top_k and summary["engine"]["spectrum"] == spectrum
    assert (summary["top_modules"][0]["effective_rank"] is not None) == (spectrum != "off")
    assert len(summary["top_modules"]) <= 10
    # Progress notifications: tensor i of N, ending at N.
    assert progress, "no progress notifications received"
    total = progress[-1][1]
    assert total and total >= 100 and progress[-1][0] == total
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert starts(log, rid) == 1

    # Every other tool, by report_id and by pair: answered from the store, nothing recomputed.
    diag = ok(await call(client, "get_diagnosis", {"report_id": rid}), "get_diagnosis")
    assert diag["diagnostics"] == summary["diagnostics"]
    top = ok(await call(client, "top_changed_modules", {"model_a": a, "model_b": b, "n": 3}), "top_changed_modules")
    assert top["report_id"] == rid and len(top["modules"]) == 3
    rels = [m["frob_norm_relative"] for m in top["modules"]]
    assert rels == sorted(rels, reverse=True)
    by_cos = ok(await call(client, "top_changed_modules",
                           {"report_id": rid, "n": 5, "sort_by": "cosine_sim", "role": "attn_o"}),
                "top_changed_modules")
    assert {m["role"] for m in by_cos["modules"]} == {"attn_o"}
    cos = [m["cosine_sim"] for m in by_cos["modules"]]
    assert cos == sorted(cos)
    prof = ok(await call(client, "layer_profile", {"report_id": rid}), "layer_profile")
    assert [row["layer"] for row in prof["layers"]] == list(range(6))
    assert prof["layers"][3]["roles"]["attn_q"]["frob_norm_relative"] > 0
    assert prof["layers"][0]["roles"]["attn_q"]["frob_norm_relative"] == 0
    insp = ok(await call(client, "inspect_checkpoint", {"model": b}), "inspect_checkpoint")
    assert insp["checkpoint"]["n_tensors"] == 104 and insp["n_layers"] == 6
    assert starts(log, rid) == 1, "a second tool on the same pair recomputed instead of reading the store"

    # The full report as a resource, valid against schemas/report.schema.json.
    res = await client.read_resource(f"modeldelta://reports/{rid}")
    report = json.loads(res.contents[0].text)
    validate("report", report)
    assert report["report_id"] == rid and len(report["modules"]) == summary["counts"]["n_tensors"]
    # The same report rendered: a self-contained HTML page and Markdown with every finding code.
    page = (await client.read_resource(f"modeldelta://reports/{rid}/html")).contents[0]
    assert page.mime_type == "text/html" and page.text.startswith("<!DOCTYPE html>") and rid in page.text
    md = (await client.read_resource(f"modeldelta://reports/{rid}/md")).contents[0]
    assert md.mime_type == "text/markdown"
    assert all(f"`{f['code']}`" in md.text for f in report["diagnostics"]["findings"])
    # The tools' text is that Markdown, kept short, pointing at the three resources.
    text = (await call(client, "compare_checkpoints", {"model_a": a, "model_b": b, "top_k": top_k,
                                                      "spectrum": spectrum})).content[0].text
    assert text.startswith("## modeldelta: ") and f"modeldelta://reports/{rid}/html" in text and len(text) < 4000
    assert starts(log, rid) == 1
    return rid


async def check_concurrent_single_flight(client: Client, ws: Workspace, log: Path, top_k: int) -> None:
    args = {"model_a": str(ws.model_a), "model_b": str(ws.model_b), "top_k": top_k, "spectrum": "off"}
    results: list[CallToolResult] = []

    async def one() -> None:
        results.append(await call(client, "compare_checkpoints", args))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    ids = {ok(r, "compare_checkpoints")["report_id"] for r in results}
    assert len(ids) == 1
    assert starts(log, ids.pop()) == 1, "two identical concurrent calls computed twice"


async def check_refusals(client: Client, ws: Workspace) -> None:
    a = str(ws.model_a)
    for outside in (ws.outside, ws.escape, Path("/etc")):
        text = error_text(await call(client, "compare_checkpoints", {"model_a": a, "model_b": str(outside)}))
        assert "outside the allowed roots" in text, text
    text = error_text(await call(client, "inspect_checkpoint", {"model": str(ws.outside)}))
    assert "outside the allowed roots" in text
    # A corrupt file is a one-line tool error naming it, and the server keeps serving.
    text = error_text(await call(client, "compare_checkpoints", {"model_a": a, "model_b": str(ws.corrupt)}))
    assert "model.safetensors" in text and "corrupt" in text
    ok(await call(client, "inspect_checkpoint", {"model": str(ws.model_b)}), "inspect_checkpoint")
    # Bad arguments of every kind: tool errors with a one-line reason.
    for tool, args in [
        ("top_changed_modules", {"report_id": "0123456789abcdef", "n": 0}),
        ("top_changed_modules", {"model_a": a, "model_b": str(ws.model_b), "sort_by": "bogus"}),
        ("get_diagnosis", {"report_id": "../../etc/passwd"}),
        ("get_diagnosis", {"report_id": "0123456789abcdef"}),
        ("get_diagnosis", {"model_a": a}),
        ("layer_profile", {}),
        ("compare_checkpoints", {"model_a": a, "model_b": "no-such-org/no-such-model"}),
        ("compare_checkpoints", {"model_a": a, "model_b": str(ws.model_b), "top_k": 0}),
        ("top_changed_modules", {"model_a": a, "model_b": str(ws.model_b), "top_n": 5}),
    ]:
        error_text(await call(client, tool, args))
    # An unknown report is a protocol error for resources/read (tools answer isError); still serving after.
    with pytest.raises(MCPError, match="unknown"):
        await client.read_resource("modeldelta://reports/0123456789abcdef")
    ok(await call(client, "inspect_checkpoint", {"model": a}), "inspect_checkpoint")


async def start_then_abandon(client: Client, args: dict[str, Any], log: Path) -> str:
    """Call compare_checkpoints and give up once the server has started computing, like a client whose
    timeout fired: the SDK client then sends notifications/cancelled. Returns the started report_id."""
    before = {rid for rid, _ in compute_events(log)}
    started: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, client, "compare_checkpoints", args)
        with anyio.fail_after(CALL_TIMEOUT_S):
            while not (started := [r for r, e in compute_events(log) if e == "start" and r not in before]):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert len(started) == 1
    return started[0]
