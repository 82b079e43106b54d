"""The hub features through the MCP tools (stdio, the installed `modeldelta-mcp`): `model_b` alone with the base
inferred, `include` / `exclude` / `layers` arguments, the claim check, against the stand-in hub."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from _core_fakehub import FakeHub
from _hub_repos import LAYERS, QO_GLOBS, Pair, add_repos, write_local
from _mcp_checks import call, error_text, ok
from _mcp_helpers import server_env, stdio_client
from mcp import Client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    local: Pair = write_local(tmp_path_factory.mktemp("hubmcp-repos"))
    with FakeHub() as fake:
        add_repos(fake, local)
        yield fake


@pytest.fixture(scope="module")
async def client(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory, anyio_backend: str) -> AsyncIterator[Client]:
    run_dir = tmp_path_factory.mktemp("hubmcp")
    env = server_env(run_dir / "cache", run_dir / "compute.log", HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url,
                     HF_HOME=str(run_dir / "hf_home"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                     MODELDELTA_MCP_TEST_DELAY_S="0", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    async with stdio_client(["--allow-path", str(run_dir)], env, run_dir) as c:
        yield c


async def test_model_b_alone_with_an_include_filter(client: Client, hub: FakeHub) -> None:
    answer = ok(await call(client, "compare_checkpoints", {"model_b": "org/tuned", "include": QO_GLOBS}),
                "compare_checkpoints")
    assert answer["model_a"] == "org/base"
    assert answer["base_inferred"]["source"] == "card" and "org/tuned" in answer["base_inferred"]["detail"]
    assert answer["filters"]["include"] == QO_GLOBS and answer["counts"]["n_tensors"] == 2 * LAYERS
    assert answer["checkpoints"]["a"]["streamed"] and answer["checkpoints"]["b"]["streamed"]
    assert answer["checkpoints"]["b"]["revision"] == hub.repos["org/tuned"].refs["main"]
    claim = next(f for f in answer["diagnostics"]["findings"] if f["code"] == "base_claim")
    assert claim["evidence"]["verdict"] == "consistent"

    diag = ok(await call(client, "get_diagnosis", {"model_b": "org/liar", "include": QO_GLOBS}), "get_diagnosis")
    assert diag["base_inferred"]["model_a"] == "org/base"
    claim = next(f for f in diag["diagnostics"]["findings"] if f["code"] == "base_claim")
    assert claim["evidence"]["verdict"] == "contradicted" and claim["category"] == "claim"


async def test_layers_and_exclude_on_the_reading_tools(client: Client) -> None:
    args = {"model_a": "org/base", "model_b": "org/tuned", "layers": "0-1", "exclude": ["*.mlp.*"]}
    top = ok(await call(client, "top_changed_modules", {**args, "n": 100}), "top_changed_modules")
    assert {m["layer"] for m in top["modules"]} == {0, 1}
    assert not any(".mlp." in m["name"] for m in top["modules"])
    profile = ok(await call(client, "layer_profile", args), "layer_profile")
    assert [row["layer"] for row in profile["layers"]] == [0, 1]
    # the same pair unfiltered is another report (filters are part of the key)
    whole = ok(await call(client, "compare_checkpoints", {"model_a": "org/base", "model_b": "org/tuned"}),
               "compare_checkpoints")
    assert whole["report_id"] != top["report_id"] and whole.get("filters") is None


async def test_bad_filters_and_ambiguous_bases_are_one_line_errors(client: Client) -> None:
    text = error_text(await call(client, "compare_checkpoints", {"model_b": "org/twobase"}))
    assert "org/base" in text and "org/other" in text
    text = error_text(await call(client, "compare_checkpoints", {"model_a": "org/base", "model_b": "org/tuned",
                                                                 "layers": "7-2"}))
    assert "layers" in text
    text = error_text(await call(client, "get_diagnosis", {"model_a": "org/base"}))
    assert "model_b" in text
