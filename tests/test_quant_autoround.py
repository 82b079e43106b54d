"""GPTQ and AWQ checkpoints as a real quantizer writes them (auto-round on CPU), compared with their source."""

from __future__ import annotations

from pathlib import Path

import pytest
from _quant_autoround import quantize_bert_tuned, quantize_qwen, qwen_source

from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.models import ComparisonReport

pytest.importorskip("auto_round")  # in the test extra; a missing install is reported, not a failure
pytestmark = pytest.mark.slow

# Median relative error of 4-bit weights in groups of 32 (round-to-nearest over Gaussian-like weights:
# about 0.08; tuned rounding trades a little of it for the output): bounds that catch a misdecoded tensor.
MAX_REL_4BIT = 0.15
MAX_REL_8BIT = 0.02


def _exact(a: Path, b: Path) -> ComparisonReport:
    return compare(resolve_pair(str(a), str(b)), EngineOptions())


def _quant(report: ComparisonReport) -> dict:
    return next(f for f in report.diagnostics.findings if f.code == "quantization_roundtrip").evidence


@pytest.fixture(scope="session")
def ar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("autoround")


@pytest.fixture(scope="session")
def qwen_fp32(ar_root: Path) -> Path:
    return qwen_source(ar_root)


@pytest.mark.parametrize("fmt,scheme,in_memory", [("auto_gptq", "gptq", False), ("auto_awq", "awq", True)])
def test_autoround_export_reads_as_quantization_alone(ar_root: Path, qwen_fp32: Path, minilm_dir: Path,
                                                       fmt: str, scheme: str, in_memory: bool) -> None:
    """An fp32 model quantized to 4 bits. From memory, auto-round stores the embeddings and head it leaves
    unquantized in bf16: part of storing B, not a training step."""
    out = quantize_qwen(qwen_fp32, ar_root / fmt, minilm_dir, fmt, in_memory=in_memory)
    report = _exact(qwen_fp32, out)
    d = report.diagnostics
    assert d.method == "quantization_roundtrip" and d.recipe == ["quantization_roundtrip"], (d.method, d.recipe)
    ev = _quant(report)
    assert (ev["declared_scheme"], ev["bits"], ev["group_size"]) == (scheme, 4, 32)
    assert ev["consistency"] == "consistent" and ev["measured_bits"] == 4
    assert ev["median_relative_error"] < MAX_REL_4BIT
    assert set(ev["relative_error_by_role"]) == {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate", "mlp_up",
                                                 "mlp_down"}
    assert ev["kept_changed"] == ev["kept_rounded"]
    assert ("model.embed_tokens.weight" in ev["kept_rounded"]) == in_memory
    modules = {m.name: m for m in report.modules}
    q = modules["model.layers.0.self_attn.q_proj.weight"]
    assert q.stored_name is not None and q.stored_name.endswith("qweight")


def test_autoround_tuned_rounding_on_minilm(ar_root: Path, minilm_dir: Path) -> None:
    """Rounding tuned on calibration text (not the nearest grid point) still reads as the declared grid."""
    out = quantize_bert_tuned(minilm_dir, ar_root / "minilm_tuned")
    report = _exact(minilm_dir, out)
    assert report.diagnostics.recipe == ["quantization_roundtrip"], report.diagnostics.recipe
    ev = _quant(report)
    assert (ev["declared_scheme"], ev["bits"], ev["group_size"]) == ("gptq", 4, 32)
    assert ev["consistency"] == "consistent"
    assert ev["median_relative_error"] < MAX_REL_4BIT
    assert ev["n_tensors"] == 36 and ev["kept_changed"] == []


def test_autoround_fine_tune_then_8bit(ar_root: Path, qwen_fp32: Path, minilm_dir: Path) -> None:
    """A fine-tune of A, then quantized to 8 bits: the recipe names both steps in order."""
    tuned = qwen_source(ar_root, trained_steps=8)
    out = quantize_qwen(tuned, ar_root / "ft_gptq8", minilm_dir, "auto_gptq", bits=8, group=32, sym=True)
    report = _exact(qwen_fp32, out)
    assert report.diagnostics.recipe == ["full_finetune", "quantization_roundtrip"], report.diagnostics.recipe
    ev = _quant(report)
    assert (ev["bits"], ev["consistency"]) == (8, "consistent")
    assert ev["kept_changed"] and not set(ev["kept_changed"]) <= set(ev["kept_rounded"])
    # against its own source, the same file is the quantization alone, with the 8-bit error
    own = _exact(tuned, out)
    assert own.diagnostics.recipe == ["quantization_roundtrip"], own.diagnostics.recipe
    assert _quant(own)["median_relative_error"] < MAX_REL_8BIT
