"""compare_many and find_base through the MCP server (in-process client) and the command line, on MiniLM and
real checkpoints derived from it (tests/_many_models.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _many_models import Family
from _mcp_checks import call, ok
from _mcp_helpers import compute_events, validate

from modeldelta_mcp.store import COMPUTE_LOG_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200), pytest.mark.anyio,
              pytest.mark.parametrize("anyio_backend", ["asyncio"])]


def _server(family: Family, cache: Path) -> Any:
    from modeldelta_mcp.server import ServerConfig, build_server

    return build_server(ServerConfig(allow_paths=[family.finetune.parent, family.base], cache_dir=cache))


async def test_compare_many_ranks_stores_every_report_and_reports_failures(
        minilm_family: Family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str) -> None:
    from mcp import Client

    log = tmp_path / "compute.log"
    monkeypatch.setenv(COMPUTE_LOG_ENV, str(log))
    fam = minilm_family
    missing = fam.finetune.parent / "no-such-model"
    cands = [str(p) for p in fam.candidates.values()] + [str(fam.corrupt), str(missing)]
    progress: list = []
    async with Client(_server(fam, tmp_path / "cache")) as client:
        answer = ok(await call(client, "compare_many", {"base": str(fam.base), "candidates": cands}, progress),
                    "compare_many")
        rows = {r["candidate"]: r for r in answer["rows"]}
        assert len(answer["rows"]) == len(cands)
        for method, path in fam.candidates.items():
            row = rows[str(path)]
            assert row["error"] is None and row["method"] == method, row
            assert row["report_id"] and row["top_roles"] and row["recipe"][0] == method
        # the procedures fix the ranking's ends: a cast moves every weight by rounding only, pruning half
        # the entries of every layer matrix moves them most; failures come last
        order = [r["candidate"] for r in answer["rows"]]
        assert order[0] == str(fam.fp16) and order[3] == str(fam.pruned)
        values = [r["mean_relative_change"] for r in answer["rows"][:4]]
        assert values == sorted(values)
        assert "model.safetensors" in rows[str(fam.corrupt)]["error"] and rows[str(fam.corrupt)]["report_id"] is None
        assert str(missing) in rows[str(missing)]["error"]
        assert all("\n" not in r["error"] for r in answer["rows"][4:])
        engine = answer["engine"]
        assert engine["from_store"] == 0 and engine["executor"] == "local"
        assert engine["base_reads"] == 103  # every float tensor of MiniLM, once, for the four candidates
        assert progress, "no progress notification"
        computed = [e for e in compute_events(log) if e[1] == "start"]
        assert len(computed) == 4

        # every candidate's full report is in the store: the single-pair tools answer without computing
        for method, path in fam.candidates.items():
            diag = ok(await call(client, "get_diagnosis", {"model_a": str(fam.base), "model_b": str(path)}),
                      "get_diagnosis")
            assert diag["report_id"] == rows[str(path)]["report_id"] and diag["diagnostics"]["method"] == method
            top = ok(await call(client, "top_changed_modules", {"report_id": rows[str(path)]["report_id"], "n": 3}),
                     "top_changed_modules")
            assert len(top["modules"]) == 3
        summary = ok(await call(client, "compare_checkpoints", {"model_a": str(fam.base), "model_b": str(fam.pruned)}),
                     "compare_checkpoints")
        assert summary["engine"]["candidates_in_pass"] == 4
        assert [e for e in compute_events(log) if e[1] == "start"] == computed

        # asked again: every row from the store, nothing read
        again = ok(await call(client, "compare_many", {"base": str(fam.base), "candidates": cands[:4],
                                                        "sort_by": "mean_cosine_sim"}), "compare_many")
        assert again["engine"]["from_store"] == 4 and again["engine"]["bytes_read"] == 0
        cos = [r["mean_cosine_sim"] for r in again["rows"]]
        assert cos == sorted(cos, reverse=True)

        # a filter applies to every candidate, and keys their reports apart from the unfiltered ones
        only_q = ok(await call(client, "compare_many", {"base": str(fam.base), "candidates": cands[:2],
                                                         "include": ["*.attention.self.query.*"], "layers": "0-2",
                                                         "spectrum": "off"}), "compare_many")
        for row in only_q["rows"]:
            assert row["error"] is None and row["report_id"] not in {r["report_id"] for r in answer["rows"]}
            top = ok(await call(client, "top_changed_modules", {"report_id": row["report_id"], "n": 100}),
                     "top_changed_modules")
            names = {m["name"] for m in top["modules"]}
            want = {f"encoder.layer.{i}.attention.self.query.{w}" for i in range(3) for w in ("weight", "bias")}
            assert names == want


async def test_find_base_picks_the_parent_and_answers_none_for_an_unrelated_model(
        minilm_family: Family, tmp_path: Path, anyio_backend: str) -> None:
    from mcp import Client

    fam = minilm_family
    async with Client(_server(fam, tmp_path / "cache")) as client:
        pool = [str(fam.sibling), str(fam.other_init), str(fam.base)]
        found = ok(await call(client, "find_base", {"model": str(fam.finetune), "pool": pool}), "find_base")
        assert found["decision"] == "found" and found["base"] == str(fam.base)
        by = {c["candidate"]: c for c in found["candidates"]}
        assert found["candidates"][0]["candidate"] == str(fam.base)
        assert by[str(fam.sibling)]["related"] and not by[str(fam.other_init)]["related"]
        assert abs(by[str(fam.other_init)]["cosine_sim"]) < 0.05
        assert by[str(fam.sibling)]["relative_change"] > by[str(fam.base)]["relative_change"]
        assert found["margin"] >= found["screen"]["decision_margin"]
        # the screen read a sample, not the checkpoints
        base_bytes = (fam.base / "model.safetensors").stat().st_size
        assert 0 < by[str(fam.base)]["bytes_read"] < base_bytes / 5
        assert len(found["screen"]["tensors"]) == 12 and "tensors" not in by[str(fam.base)]["evidence"]
        diag = ok(await call(client, "get_diagnosis", {"report_id": found["report_id"]}), "get_diagnosis")
        assert diag["diagnostics"]["method"] == "full_finetune"

        none = ok(await call(client, "find_base", {"model": str(fam.other_init),
                                                   "pool": [str(fam.base), str(fam.sibling), str(fam.lora_merge)]}),
                  "find_base")
        assert none["decision"] == "none" and none["base"] is None and none["report_id"] is None
        assert not any(c["related"] for c in none["candidates"])


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, MODELDELTA_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-m", "modeldelta_mcp.cli", *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_cli_many_and_find_base(minilm_family: Family, tmp_path: Path, anyio_backend: str) -> None:
    fam = minilm_family
    out = tmp_path / "many.json"
    done = _cli("many", str(fam.base), str(fam.fp16), str(fam.corrupt), "--spectrum", "off", "-q", "-o", str(out),
                cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    answer = json.loads(out.read_text())
    validate("compare_many", answer)
    assert [r["candidate"] for r in answer["rows"]] == [str(fam.fp16), str(fam.corrupt)]
    assert answer["rows"][0]["method"] == "precision_change" and answer["rows"][1]["error"]

    md = tmp_path / "many.md"
    again = _cli("many", str(fam.base), str(fam.fp16), str(fam.corrupt), "--spectrum", "off", "-q", "-o", str(md),
                 cache=tmp_path / "cache")  # from the store this time
    assert again.returncode == 0, again.stderr
    assert f"| 1 | `{fam.fp16}` |" in md.read_text() and "```" in md.read_text()

    text = _cli("find-base", str(fam.other_init), str(fam.base), "-q", cache=tmp_path / "cache")
    assert text.returncode == 0, text.stderr
    assert "None of the 1 candidates is related" in text.stdout

    bad = _cli("many", str(fam.base), "--sort-by", "nope", cache=tmp_path / "cache")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
