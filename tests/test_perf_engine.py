"""Engine plumbing: budgets and blocks, mmap release, devices, fast and off spectra, the benchmark pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _perf_pairs import TINY_QWEN, entropy_rank, reference_sigma, save_pair, tiny_qwen_pair
from safetensors import safe_open

from modeldelta_mcp.align import align
from modeldelta_mcp.engine.fast_spectrum import FastSpectrum
from modeldelta_mcp.engine.plan import BYTES_PER_ENTRY, PairPlan, gram_reserve, plan_pair
from modeldelta_mcp.engine.run import BlockReaders, EngineOptions, pick_device, read_delta_block, run_engine
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import ForensicCounters
from modeldelta_mcp.sources import resolve

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory):
    a, b = tiny_qwen_pair(tmp_path_factory.mktemp("perf-engine"))
    ca, cb = resolve(str(a)), resolve(str(b))
    return a, b, ca, cb, align(ca, cb).pairs


def test_benchmark_pair_has_the_qwen2_layout(qwen) -> None:
    a, _, ca, _, pairs = qwen
    expected = dict(TINY_QWEN.tensors())
    assert {n: tuple(r.shape) for n, r in ca.tensors.items()} == expected
    assert all(r.dtype == "bfloat16" for r in ca.tensors.values())
    index = json.loads((a / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]
    assert "model.layers.0.self_attn.q_proj.bias" in expected and "lm_head.weight" in expected
    assert len(pairs) == len(expected)


def test_blocks_and_grams_fit_the_budget(qwen) -> None:
    *_, pairs = qwen
    budget = 256 * 1024
    for pair in pairs:
        plan = plan_pair(pair, budget)
        largest = max(b.stop - b.start for b in plan.blocks) * (plan.cols if plan.blocks[0].axis == 0 else plan.rows)
        reserve = gram_reserve(plan.rows, plan.cols) if plan.spectral else 0
        if reserve <= budget * 0.75:
            assert largest * BYTES_PER_ENTRY + reserve <= budget, pair.name
        covered = sum(b.stop - b.start for b in plan.blocks)
        assert covered == (plan.cols if plan.gram_of_rows and plan.blocks[0].axis == 1 else plan.rows)


def test_small_budget_gives_the_numbers_of_the_default(qwen) -> None:
    _, _, ca, cb, pairs = qwen
    big = run_engine(ca, cb, pairs, EngineOptions(device="cpu")).modules
    small = run_engine(ca, cb, pairs, EngineOptions(device="cpu", memory_budget=64 * 1024)).modules
    assert any(len(plan_pair(p, 64 * 1024).blocks) > 1 for p in pairs)
    for m1, m2 in zip(big, small, strict=True):
        assert m1.name == m2.name
        assert m2.frob_norm == pytest.approx(m1.frob_norm, rel=1e-9)
        assert m2.cosine_sim == pytest.approx(m1.cosine_sim, rel=1e-9)
        if m1.has_svd:
            assert m2.effective_rank == pytest.approx(m1.effective_rank, rel=1e-5)
            assert m2.top_singular_values == pytest.approx(m1.top_singular_values, rel=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_released_readers_leave_no_file_mapped(qwen) -> None:
    """A touched page of an open mmap counts as resident memory; the engine unmaps after each block."""
    a, b, ca, cb, pairs = qwen
    pair = max(pairs, key=lambda p: p.numel)
    plan = plan_pair(pair, 1024 * 1024)
    readers = BlockReaders(ca, cb)

    def mapped() -> bool:
        maps = Path("/proc/self/maps").read_text()
        return str(a.resolve()) in maps or str(b.resolve()) in maps

    read_delta_block(readers, pair, plan, plan.blocks[0], None)
    assert mapped(), "control: an open safetensors handle maps its file"
    readers.release()
    assert not mapped()
    readers.close()
    with safe_open(str(a / ca.tensors[pair.a.name].file), framework="pt"):
        pass
    assert not mapped()


def test_device_choice() -> None:
    assert pick_device("cpu") == CPU
    assert pick_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else CPU)
    with pytest.raises(ModelDeltaError, match="--device tpu"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelDeltaError, match="no CUDA device"):
            pick_device("cuda")


def test_spectrum_off_gives_norms_only(qwen) -> None:
    _, _, ca, cb, pairs = qwen
    mods = run_engine(ca, cb, pairs, EngineOptions(device="cpu", spectrum="off")).modules
    mats = [m for m in mods if len(m.shape) == 2]
    assert mats and all(m.effective_rank is None and m.top_singular_values is None for m in mats)
    assert all(m.frob_norm > 0 for m in mats)
    # off and fast read with one reader thread per core; the statistics must not depend on it
    exact = run_engine(ca, cb, pairs, EngineOptions(device="cpu")).modules
    def counts(f: ForensicCounters) -> dict[str, float]:  # the per-entry counts; sv_* come from the spectrum
        return {k: v for k, v in f.model_dump().items() if not k.startswith("sv_")}

    for m_off, m_exact in zip(mods, exact, strict=True):
        assert (m_off.name, m_off.frob_norm, m_off.cosine_sim, m_off.sparsity, counts(m_off.forensics)) == \
            (m_exact.name, m_exact.frob_norm, m_exact.cosine_sim, m_exact.sparsity, counts(m_exact.forensics))


def _planted(rows: int, cols: int, rank: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, cols, generator=g) * 0.02
    d = torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g) * 0.01
    return a, a + d + noise * torch.randn(rows, cols, generator=g)


def test_fast_spectrum_top_values_and_error_band(tmp_path: Path) -> None:
    """Planted rank-8 + dense noise (the benchmark's kind of delta): top σ close, effective rank in its band."""
    name = "model.layers.0.mlp.up_proj.weight"
    ta, tb = _planted(1500, 200, 8, 2e-4, seed=3)
    pa, pb = save_pair(tmp_path, {name: ta}, {name: tb})
    ca, cb = resolve(str(pa)), resolve(str(pb))
    pairs = align(ca, cb).pairs
    fast = run_engine(ca, cb, pairs, EngineOptions(device="cpu", spectrum="fast", memory_budget=512 * 1024)).modules
    again = run_engine(ca, cb, pairs, EngineOptions(device="cpu", spectrum="fast", memory_budget=512 * 1024)).modules
    unblocked = run_engine(ca, cb, pairs, EngineOptions(device="cpu", spectrum="fast")).modules
    ref = reference_sigma(ta, tb)
    m = fast[0]
    assert m.spectrum == "fast" and m.spectral_alpha is None and m.n_singular_values == 200
    # Nyström never overestimates; the planted directions stand far above the noise and come out close
    top = torch.tensor(m.top_singular_values, dtype=torch.float64)
    assert bool((top <= ref[: top.numel()] * (1 + 1e-6)).all())
    torch.testing.assert_close(top[:8], ref[:8], rtol=2e-3, atol=0.0)
    energy = float((ref**2).sum())
    assert m.stable_rank == pytest.approx(energy / float(ref[0]) ** 2, rel=5e-3)
    assert m.effective_rank == pytest.approx(entropy_rank(ref), rel=0.15)  # docs/engine.md: error band
    assert again[0].top_singular_values == m.top_singular_values  # fixed seed: the same numbers every run
    assert unblocked[0].top_singular_values[:8] == pytest.approx(m.top_singular_values[:8], rel=1e-5)


def test_fast_spectrum_leaves_narrow_matrices_to_the_exact_route() -> None:
    narrow = PairPlan(1000, 40, True, False, (), "float32")
    assert FastSpectrum.maybe(narrow, 20, CPU) is None
    wide = PairPlan(1000, 400, True, False, (), "float32")
    assert FastSpectrum.maybe(wide, 20, CPU) is not None


def test_column_blocks_of_a_reader_without_tiles(tmp_path: Path) -> None:
    """Wide matrices cut into column blocks: safetensors reads row tiles, a .bin reader whole columns."""
    g = torch.Generator().manual_seed(5)
    name = "model.layers.0.mlp.down_proj.weight"
    ta = torch.randn(40, 300, generator=g)
    tb = ta + 0.01 * torch.randn(40, 300, generator=g)
    st_a, st_b = save_pair(tmp_path / "st", {name: ta}, {name: tb})
    for side, t in (("a", ta), ("b", tb)):
        (tmp_path / "bin" / side).mkdir(parents=True)
        torch.save({name: t}, tmp_path / "bin" / side / "pytorch_model.bin")
    budget = 16 * 1024
    results = []
    for a, b in ((st_a, st_b), (tmp_path / "bin" / "a", tmp_path / "bin" / "b")):
        ca, cb = resolve(str(a)), resolve(str(b))
        pairs = align(ca, cb).pairs
        assert plan_pair(pairs[0], budget).blocks[0].axis == 1 and len(plan_pair(pairs[0], budget).blocks) > 1
        results.append(run_engine(ca, cb, pairs, EngineOptions(device="cpu", memory_budget=budget)).modules[0])
    ref = reference_sigma(ta, tb)
    for m in results:
        assert m.frob_norm == pytest.approx(float((tb - ta).double().norm()), rel=1e-9)
        assert m.effective_rank == pytest.approx(entropy_rank(ref), rel=1e-3)
    assert results[0].top_singular_values == pytest.approx(results[1].top_singular_values, rel=1e-9)
