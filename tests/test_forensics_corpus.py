"""The forensic corpus: every real derivation of two real base models gets the right method and evidence.

Cases and expectations: tests/_forensics_corpus.py. Each checkpoint is built once per session and
compared once (reports cached per session); the MCP check reads one of those comparisons again
through the get_diagnosis tool.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _forensics_corpus import BERT_CASE_NAMES, QWEN_CASE_NAMES, Approx, Case
from safetensors.torch import load_file

from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.diagnosis.codes import unregistered
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.models import ComparisonReport, Diagnostics, Finding

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

_REPORTS: dict[tuple[str, str], ComparisonReport] = {}


def report_of(case: Case) -> ComparisonReport:
    """One comparison per pair and session (the v2 corpus reads these too)."""
    key = (str(case.a), str(case.b))
    if key not in _REPORTS:
        _REPORTS[key] = compare(resolve_pair(*key), EngineOptions())
    return _REPORTS[key]


def _finding(diag: Diagnostics, code: str) -> Finding:
    hits = [f for f in diag.findings if f.code == code]
    assert len(hits) == 1, f"expected one {code} finding, got {[f.code for f in diag.findings]}"
    return hits[0]


def check_registered(diag: Diagnostics) -> None:
    """The contract (docs/contracts.md) lists every code and evidence key emitted."""
    for f in diag.findings:
        problem = unregistered(f.code, f.category, list(f.evidence))
        assert problem is None, problem


def check_evidence(name: str, finding: Finding, expected: dict[str, Any]) -> None:
    """Each expected evidence value: equal, or within its tolerance where it is an Approx."""
    for key, want in expected.items():
        got: Any = finding.evidence.get(key)
        if isinstance(want, Approx):
            assert got is not None and abs(got - want.value) <= want.tol, f"{name}: {key}={got}, want {want}"
        else:
            assert got == want, f"{name}: {key}={got!r}, want {want!r}"


def check_case(case: Case) -> None:
    diag = report_of(case).diagnostics
    check_registered(diag)
    codes = [f.code for f in diag.findings if f.category == "method"]
    assert diag.method == case.method, f"{case.name}: method {diag.method}, findings {codes}"
    check_evidence(case.name, _finding(diag, case.method), case.evidence)
    assert case.also <= set(codes), f"{case.name}: {sorted(case.also - set(codes))} missing from {codes}"
    if case.method != "identical":  # attention o and q exist in both architectures: always reported
        oq = _finding(diag, "oq_ratio")
        assert oq.evidence["variant"] == "O/Q"
        assert _finding(diag, "magnitude").evidence["profile_tag"] == diag.profile_tag  # the seed's bands
    assert diag.method in diag.summary


@pytest.mark.parametrize("name", BERT_CASE_NAMES)
def test_forensics_minilm_case(bert_cases: dict[str, Case], name: str) -> None:
    check_case(bert_cases[name])


@pytest.mark.parametrize("name", QWEN_CASE_NAMES)
def test_forensics_qwen_case(qwen_cases: dict[str, Case], name: str) -> None:
    check_case(qwen_cases[name])


def _relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], name: str) -> float:
    return float((b[name].double() - a[name].double()).norm() / a[name].double().norm())


def test_forensics_oq_ratio_recomputed_from_the_tensors(bert_cases: dict[str, Case]) -> None:
    case = bert_cases["full_finetune"]
    a = load_file(str(case.a / "model.safetensors"))
    b = load_file(str(case.b / "model.safetensors"))
    layers = range(6)
    o = sum(_relative(a, b, f"encoder.layer.{i}.attention.output.dense.weight") for i in layers) / 6
    q = sum(_relative(a, b, f"encoder.layer.{i}.attention.self.query.weight") for i in layers) / 6
    oq = _finding(report_of(case).diagnostics, "oq_ratio")
    assert math.isclose(oq.evidence["oq"], o / q, rel_tol=1e-6)
    assert oq.severity == ("notable" if o / q > 2 else "info")


def test_forensics_adapter_reads_as_peft_merges_it(bert_cases: dict[str, Case], minilm_dir: Path) -> None:
    """The adapter source's W + scaling·B·A equals PEFT's own merge_and_unload of the same directory."""
    from peft import PeftModel
    from transformers import BertModel

    case = bert_cases["lora_adapter"]
    merged = PeftModel.from_pretrained(BertModel.from_pretrained(str(minilm_dir)), str(case.b)).merge_and_unload()
    want = merged.state_dict()
    pair = resolve_pair(str(case.a), str(case.b))
    reader = pair.b.open()
    try:
        for name in ("encoder.layer.2.attention.self.key.weight", "encoder.layer.5.intermediate.dense.weight"):
            got = reader.full(name)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want[name], rtol=0, atol=1e-6)
            rows = reader.rows(name, 3, 9)
            torch.testing.assert_close(rows, want[name][3:9], rtol=0, atol=1e-6)
            cols = reader.cols(name, 5, 17)
            torch.testing.assert_close(cols, want[name][:, 5:17], rtol=0, atol=1e-6)
        untouched = "encoder.layer.0.attention.self.query.weight"
        assert torch.equal(reader.full(untouched), want[untouched])
    finally:
        reader.close()


def test_forensics_adapter_core_spectrum_is_the_full_spectrum(bert_cases: dict[str, Case]) -> None:
    """σ from the r×r core (QR of B and Aᵀ) equals svdvals of the materialised scaling·B·A."""
    case = bert_cases["lora_adapter"]
    pair = resolve_pair(str(case.a), str(case.b))
    facts = pair.b.adapter
    assert facts is not None
    state = load_file(str(case.b / "adapter_model.safetensors"))
    for mod in facts.modules[:3]:
        prefix = "base_model.model." + mod.name.removesuffix(".weight")
        a = state[prefix + ".lora_A.weight"].double()
        b = state[prefix + ".lora_B.weight"].double()
        full = torch.linalg.svdvals(mod.scaling * b @ a)[: len(mod.top_singular_values)]
        torch.testing.assert_close(torch.tensor(mod.top_singular_values, dtype=torch.float64), full,
                                   rtol=1e-9, atol=1e-12)
        assert mod.numerical_rank == mod.rank == 4


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_forensics_mcp_get_diagnosis_carries_every_finding(qwen_cases: dict[str, Case], tmp_path: Path,
                                                                 anyio_backend: str) -> None:
    """get_diagnosis over MCP (in-process client) returns the stored report's diagnostics with all evidence."""
    from _mcp_helpers import validate
    from mcp import Client

    from modeldelta_mcp.server import ServerConfig, build_server

    case = qwen_cases["lora_adapter"]
    server = build_server(ServerConfig(allow_paths=[case.a.parent], cache_dir=tmp_path / "cache"))
    async with Client(server) as client:
        result = await client.call_tool("get_diagnosis", {"model_a": str(case.a), "model_b": str(case.b)})
    assert not result.is_error, result.content
    validate("get_diagnosis", result.structured_content)
    got = Diagnostics.model_validate(result.structured_content["diagnostics"])
    assert got.method == "lora_adapter"
    want = report_of(case).diagnostics
    assert [f.code for f in got.findings] == [f.code for f in want.findings]
    assert _finding(got, "lora_adapter").evidence == _finding(want, "lora_adapter").evidence
