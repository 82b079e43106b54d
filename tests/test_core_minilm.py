"""Real-model tests on all-MiniLM-L6-v2: its fp16 cast, a copy fine-tuned in the test, a sharded re-save."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
import torch
from _core_ckpt import run_cli, run_compare
from _core_minilm import finetuned, fp16_cast, resharded_with_prefix
from safetensors.torch import load_file

from modeldelta_mcp.models import ComparisonReport

pytestmark = pytest.mark.slow

N_FLOAT_TENSORS = 103  # every tensor of the checkpoint but the int64 embeddings.position_ids
FP16_UNIT_ROUNDOFF = 2.0**-11  # round-to-nearest relative error bound of float16 (10 stored mantissa bits)
SPECTRUM_CHECKED = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight",
                    "encoder.layer.5.output.dense.weight"]  # square, tall and wide


@pytest.fixture(scope="module")
def derived(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("minilm")
    return {
        "fp16": fp16_cast(minilm_dir, root / "fp16"),
        "finetuned": finetuned(minilm_dir, root / "finetuned"),
        "resharded": resharded_with_prefix(minilm_dir, root / "resharded", prefix="bert.", shards=3),
    }


@pytest.fixture(scope="module")
def base_tensors(minilm_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(minilm_dir / "model.safetensors"))


def _check_against_definitions(report: ComparisonReport, a: dict[str, torch.Tensor],
                               b: dict[str, torch.Tensor]) -> None:
    """frob_norm_relative, cosine and sparsity of every module, recomputed in float64 from the files."""
    for m in report.modules:
        wa, wb = a[m.name].double().flatten(), b[m.name].double().flatten()
        d = wb - wa
        assert m.frob_norm_relative == pytest.approx(float(d.norm() / (wa.norm() + 1e-12)), rel=1e-5, abs=1e-12)
        # the seed's cosine: each norm clamped at 1e-8, so an all-zero tensor has cosine 0
        cos = float(wa @ wb / (wa.norm().clamp_min(1e-8) * wb.norm().clamp_min(1e-8)))
        assert m.cosine_sim == pytest.approx(min(1.0, cos), abs=1e-7), m.name
        assert m.sparsity == pytest.approx(float((d.abs() < 1e-5).double().mean()), abs=1e-9)
        assert m.identical == torch.equal(wa, wb), m.name


def _entropy_rank(sigma: torch.Tensor) -> float:
    p = sigma / sigma.sum()
    p = p[p > 1e-12]
    return math.exp(-float((p * p.log()).sum()))


def _check_spectra(report: ComparisonReport, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    by_name = {m.name: m for m in report.modules}
    for name in SPECTRUM_CHECKED:
        ref = torch.linalg.svdvals(b[name].double() - a[name].double())
        m = by_name[name]
        assert m.n_singular_values == ref.numel()
        assert m.top_singular_values[0] == pytest.approx(float(ref[0]), rel=1e-4), name
        assert m.effective_rank == pytest.approx(_entropy_rank(ref), rel=0.01), name


def test_against_its_own_fp16_cast(minilm_dir: Path, derived: dict[str, Path], base_tensors) -> None:
    report = run_compare(minilm_dir, derived["fp16"])
    assert report.n_tensors == N_FLOAT_TENSORS
    assert [s.name for s in report.skipped] == ["embeddings.position_ids"]
    assert {m.dtype_a for m in report.modules} == {"float32"} and {m.dtype_b for m in report.modules} == {"float16"}
    # rounding to float16 moves each entry by at most its unit roundoff: so does the norm of the whole delta
    assert max(m.frob_norm_relative for m in report.modules) <= FP16_UNIT_ROUNDOFF
    assert min(m.cosine_sim for m in report.modules if m.frob_norm > 0) > 1 - FP16_UNIT_ROUNDOFF**2
    changed = [m for m in report.modules if not m.identical]
    # only the pooler already sits on the float16 grid in this checkpoint
    assert {m.name for m in report.modules if m.identical} == {"pooler.dense.weight", "pooler.dense.bias"}
    # rounding noise of dense weights spreads over the whole spectrum: high effective rank in every layer matrix
    layer_matrices = [m for m in changed if m.has_svd and m.layer is not None]
    assert len(layer_matrices) == 36
    for m in layer_matrices:
        assert m.effective_rank > 0.5 * m.n_singular_values, m.name
    assert report.diagnostics.profile_tag == "surgical"
    b = load_file(str(derived["fp16"] / "model.safetensors"))
    _check_against_definitions(report, base_tensors, b)
    _check_spectra(report, base_tensors, b)


def test_against_a_copy_finetuned_in_the_test(minilm_dir: Path, derived: dict[str, Path], base_tensors) -> None:
    losses = [float(x) for x in (derived["finetuned"] / "losses.txt").read_text().split()]
    assert losses[-1] < losses[0], "the fine-tune did not learn"
    report = run_compare(minilm_dir, derived["finetuned"])
    by_name = {m.name: m for m in report.modules}
    assert report.n_tensors == N_FLOAT_TENSORS
    # mean pooling never reaches the pooler: no gradient, bit-identical
    assert by_name["pooler.dense.weight"].identical and by_name["pooler.dense.bias"].identical
    # only the rows of tokens in the training sentences move: the embedding delta is row-sparse
    assert by_name["embeddings.word_embeddings.weight"].sparsity > 0.99
    for layer in range(6):
        q = by_name[f"encoder.layer.{layer}.attention.self.query.weight"]
        assert not q.identical and 0 < q.frob_norm_relative < 0.05 and q.cosine_sim < 1.0
    assert report.diagnostics.profile_tag in {"surgical", "standard"}
    assert report.diagnostics.method != "identical"
    b = load_file(str(derived["finetuned"] / "model.safetensors"))
    _check_against_definitions(report, base_tensors, b)
    _check_spectra(report, base_tensors, b)


def test_sharded_resave_under_a_prefix_is_identical(minilm_dir: Path, derived: dict[str, Path]) -> None:
    report = run_compare(minilm_dir, derived["resharded"])
    assert len(report.checkpoints.b.files) == 3
    assert report.n_tensors == N_FLOAT_TENSORS
    assert report.diagnostics.method == "identical" and report.diagnostics.profile_tag == "identical"
    assert all(m.identical for m in report.modules)
    assert all(m.name.startswith("bert.") for m in report.modules), "names as stored in B"
    assert [s.name for s in report.skipped] == ["bert.embeddings.position_ids"]
    assert report.totals.n_changed == 0 and report.totals.total_delta_norm == 0.0


def test_cli_json_validates_against_the_report_model(minilm_dir: Path, derived: dict[str, Path],
                                                     tmp_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    proc = run_cli(str(minilm_dir), str(derived["finetuned"]), "-o", str(out),
                   env={"MODELDELTA_CACHE_DIR": str(tmp_cache)})
    assert proc.returncode == 0, proc.stderr
    assert f"JSON report saved to {out}" in proc.stderr
    data = json.loads(out.read_text())
    report = ComparisonReport.model_validate(data)
    jsonschema.validate(data, ComparisonReport.model_json_schema())
    assert report.model_a == str(minilm_dir) and report.n_tensors == N_FLOAT_TENSORS
    assert report.checkpoints.a.architecture == "BertModel"
    seed_keys = {"model_a", "model_b", "n_tensors", "n_skipped", "modules", "diagnostics", "model_info"}
    assert seed_keys <= set(data)
    seed_module_keys = {"name", "shape", "n_params", "frob_norm", "frob_norm_relative", "cosine_sim", "sparsity",
                        "has_svd", "effective_rank", "concentration_top_k", "top_k", "top_singular_values",
                        "spectral_alpha", "n_singular_values"}
    assert all(seed_module_keys <= set(m) for m in data["modules"] if m["has_svd"])
