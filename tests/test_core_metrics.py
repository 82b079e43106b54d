"""Metric correctness on planted deltas: closed forms, the Gram route against svdvals, block invariance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _core_ckpt import TINY_CONFIG, module, run_compare, save_checkpoint

from modeldelta_mcp.align import align
from modeldelta_mcp.engine.plan import plan_pair
from modeldelta_mcp.engine.run import DEFAULT_MEMORY_BUDGET
from modeldelta_mcp.engine.spectrum import GramAccumulator, summarize
from modeldelta_mcp.sources import resolve

TOP_K = 2  # small on purpose: concentration_top_k then differs from 1 for the planted ranks
NORM_A = 50.0  # ‖W_a‖_F of the planted base matrices


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, dtype=torch.float64, generator=gen))
    return q


def planted(shape: tuple[int, int], sigma: list[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (‖A‖ = NORM_A, orthogonal to Δ) and B = A + Δ, with Δ = U diag(σ) Vᵀ exactly rank len(σ); stored fp32."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    r = len(sigma)
    delta = _orthonormal(m, r, gen) @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ _orthonormal(n, r, gen).T
    a = torch.randn(m, n, dtype=torch.float64, generator=gen)
    a -= (a * delta).sum() / (delta * delta).sum() * delta  # <A, Δ> = 0 makes the cosine a closed form
    a *= NORM_A / a.norm()
    return a.float(), (a + delta).float()


def entropy_rank(sigma: torch.Tensor) -> float:
    p = sigma / sigma.sum()
    p = p[p > 1e-12]
    return math.exp(-float((p * p.log()).sum()))


# name -> (shape, σ of the planted delta)
RANK_CASES = {
    "layers.0.equal.weight": ((96, 64), [3.0, 3.0, 3.0, 3.0, 3.0]),
    "layers.0.decay.weight": ((96, 64), [8.0, 4.0, 2.0, 1.0]),
    "layers.0.wide.weight": ((40, 120), [5.0, 1.0, 0.5]),
    "layers.0.rank1.weight": ((64, 64), [2.5]),
}
POWER_ALPHA = 1.0  # σ_i = i^-α on a full-rank delta: spectral_alpha must come back as α


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("planted")
    ta: dict[str, torch.Tensor] = {}
    tb: dict[str, torch.Tensor] = {}
    for i, (name, (shape, sigma)) in enumerate(RANK_CASES.items()):
        ta[name], tb[name] = planted(shape, sigma, seed=i)
    n = 48
    ta["layers.1.power.weight"], tb["layers.1.power.weight"] = planted(
        (64, n), [float(i) ** -POWER_ALPHA for i in range(1, n + 1)], seed=11)
    # Sparsity: 1000 entries in [0.5, 1); 100 move by 0.01 (changed), 200 by 5e-6 (< 1e-5: unchanged), 700 stay.
    gen = torch.Generator().manual_seed(5)
    a = 0.5 + 0.5 * torch.rand(40, 25, generator=gen)
    step = torch.zeros(1000)
    perm = torch.randperm(1000, generator=gen)
    step[perm[:100]] = 0.01
    step[perm[100:300]] = 5e-6
    ta["layers.1.sparse.weight"], tb["layers.1.sparse.weight"] = a, a + step.reshape(40, 25)
    # A bias moved by (3, 4, 0, ...): ‖Δ‖ = 5; an untouched norm weight.
    bias = torch.linspace(-1.0, 1.0, 16)
    ta["layers.1.sparse.bias"], tb["layers.1.sparse.bias"] = bias, bias + torch.tensor([3.0, 4.0] + [0.0] * 14)
    ta["layers.1.norm.weight"] = tb["layers.1.norm.weight"] = torch.ones(16)
    save_checkpoint(root / "a", ta, config=TINY_CONFIG)
    save_checkpoint(root / "b", tb, config=TINY_CONFIG)
    return run_compare(root / "a", root / "b", top_k=TOP_K), ta, tb


@pytest.mark.parametrize("name", list(RANK_CASES))
def test_exact_rank_r_delta_matches_closed_forms(planted_report, name: str) -> None:
    report, _, _ = planted_report
    shape, sigma = RANK_CASES[name]
    m = module(report, name)
    s = torch.tensor(sigma, dtype=torch.float64)
    energy = float((s * s).sum())
    assert m.has_svd and not m.identical
    assert m.n_singular_values == min(shape)
    assert m.frob_norm == pytest.approx(math.sqrt(energy), rel=1e-5)
    assert m.frob_norm_relative == pytest.approx(math.sqrt(energy) / NORM_A, rel=1e-5)
    assert m.cosine_sim == pytest.approx(NORM_A / math.sqrt(NORM_A**2 + energy), abs=1e-6)
    # The fp32 storage leaves a rounding tail ~1e-7·σ1; a float64 Gram keeps it negligible (a float32 one would not).
    assert m.effective_rank == pytest.approx(entropy_rank(s), rel=1e-3)
    assert m.stable_rank == pytest.approx(energy / sigma[0] ** 2, rel=1e-4)
    assert m.concentration_top_k == pytest.approx(float((s[:TOP_K] ** 2).sum()) / energy, rel=1e-5)
    assert m.top_k == TOP_K
    assert m.top_singular_values == pytest.approx((sigma + [0.0] * TOP_K)[:TOP_K], rel=1e-5, abs=1e-5)


def test_equal_singular_values_give_integer_effective_rank(planted_report) -> None:
    report, _, _ = planted_report
    assert module(report, "layers.0.equal.weight").effective_rank == pytest.approx(5.0, rel=1e-3)
    assert module(report, "layers.0.rank1.weight").effective_rank == pytest.approx(1.0, rel=1e-3)
    assert module(report, "layers.0.rank1.weight").concentration_top_k == pytest.approx(1.0, abs=1e-9)


def test_power_law_spectrum_gives_its_alpha(planted_report) -> None:
    report, _, _ = planted_report
    m = module(report, "layers.1.power.weight")
    assert m.spectral_alpha == pytest.approx(POWER_ALPHA, rel=1e-3)
    assert m.n_singular_values == 48


def test_sparsity_counts_entries_below_seed_threshold(planted_report) -> None:
    report, ta, tb = planted_report
    m = module(report, "layers.1.sparse.weight")
    assert m.sparsity == pytest.approx(0.9, abs=1e-12)
    d = (tb["layers.1.sparse.weight"].double() - ta["layers.1.sparse.weight"].double())
    assert m.frob_norm == pytest.approx(float(d.norm()), rel=1e-6)
    assert m.frob_norm == pytest.approx(math.sqrt(100 * 0.01**2 + 200 * 5e-6**2), rel=1e-4)


def test_bias_and_untouched_vectors(planted_report) -> None:
    report, ta, _ = planted_report
    bias = module(report, "layers.1.sparse.bias")
    assert not bias.has_svd and bias.effective_rank is None
    assert bias.frob_norm == pytest.approx(5.0, rel=1e-6)
    assert bias.frob_norm_relative == pytest.approx(5.0 / float(ta["layers.1.sparse.bias"].double().norm()), rel=1e-6)
    assert bias.sparsity == pytest.approx(14 / 16)
    assert not bias.in_profile  # 16 entries: outside the seed's >= 1000-parameter set
    norm = module(report, "layers.1.norm.weight")
    assert norm.identical and norm.frob_norm == 0.0 and norm.cosine_sim == pytest.approx(1.0)
    assert norm.sparsity == 1.0


def test_metrics_follow_the_seed_definitions(planted_report) -> None:
    """frob, relative change, cosine and sparsity from their definitions on the stored tensors (float64)."""
    report, ta, tb = planted_report
    for name in ta:
        a, b = ta[name].double().flatten(), tb[name].double().flatten()
        d = b - a
        m = module(report, name)
        assert m.frob_norm == pytest.approx(float(d.norm()), rel=1e-6, abs=1e-12), name
        assert m.frob_norm_relative == pytest.approx(float(d.norm() / (a.norm() + 1e-12)), rel=1e-6, abs=1e-12), name
        cos = float(a @ b / (a.norm() * b.norm()))
        assert m.cosine_sim == pytest.approx(min(1.0, cos), abs=1e-7), name
        assert m.sparsity == pytest.approx(float((d.abs() < 1e-5).double().mean()), abs=1e-12), name


# ---- the Gram route against torch.linalg.svdvals -------------------------------------------------

def _spectrum_case(kind: str, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    m = shape[0]
    n = math.prod(shape[1:])
    k = min(m, n)
    if kind == "well_conditioned":
        a = torch.randn(*shape, generator=gen)
        return a, a + 0.01 * torch.randn(*shape, generator=gen)
    if kind == "low_rank_fp32":  # a LoRA-like merge saved in fp32: rank 6 plus fp32 rounding
        sigma = [10.0 * 0.6**i for i in range(6)]
    elif kind == "ill_conditioned":  # full rank, σ from 1 down to 1e-6
        sigma = [10.0 ** (-6.0 * i / (k - 1)) for i in range(k)]
    else:
        raise AssertionError(kind)
    a, b = planted((m, n), sigma, seed)
    return a.reshape(shape), b.reshape(shape)


SPECTRUM_CASES = {
    "layers.2.tall_well.weight": ("well_conditioned", (300, 120)),
    "layers.2.wide_well.weight": ("well_conditioned", (120, 300)),
    "layers.2.tall_lowrank.weight": ("low_rank_fp32", (256, 96)),
    "layers.2.wide_lowrank.weight": ("low_rank_fp32", (96, 256)),
    "layers.2.tall_ill.weight": ("ill_conditioned", (200, 64)),
    "layers.2.conv3d.weight": ("well_conditioned", (90, 4, 5)),
    "layers.2.conv_lowrank.weight": ("low_rank_fp32", (120, 4, 8)),
}
SMALL_BUDGET = 16 * 1024  # bytes: cuts every matrix above into several row or column blocks


@pytest.fixture(scope="module")
def spectrum_pair(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("spectra")
    ta, tb = {}, {}
    for i, (name, (kind, shape)) in enumerate(SPECTRUM_CASES.items()):
        ta[name], tb[name] = _spectrum_case(kind, shape, seed=100 + i)
    save_checkpoint(root / "a", ta, config=TINY_CONFIG)
    save_checkpoint(root / "b", tb, config=TINY_CONFIG)
    one_block = run_compare(root / "a", root / "b", top_k=20)
    blocked = run_compare(root / "a", root / "b", top_k=20, memory_budget=SMALL_BUDGET)
    return root, ta, tb, one_block, blocked


def _reference_sigma(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = b.double() - a.double()
    return torch.linalg.svdvals(d.reshape(d.shape[0], -1))


@pytest.mark.parametrize("name", list(SPECTRUM_CASES))
def test_gram_route_matches_svdvals(spectrum_pair, name: str) -> None:
    _, ta, tb, report, _ = spectrum_pair
    ref = _reference_sigma(ta[name], tb[name])
    m = module(report, name)
    assert m.n_singular_values == ref.numel()
    assert m.top_singular_values[0] == pytest.approx(float(ref[0]), rel=1e-4)
    assert m.effective_rank == pytest.approx(entropy_rank(ref), rel=0.01)
    # every reported top-k value that stands above the fp32 noise floor agrees too
    for got, want in zip(m.top_singular_values, ref[: m.top_k].tolist(), strict=True):
        if want > 1e-4 * float(ref[0]):
            assert got == pytest.approx(want, rel=1e-4)


def test_float32_gram_would_fail_the_low_rank_case(spectrum_pair) -> None:
    """Negative control: the tolerance above does catch a float32 Gram on an exactly low-rank fp32 delta."""
    _, ta, tb, _, _ = spectrum_pair
    name = "layers.2.tall_lowrank.weight"
    d = (tb[name].float() - ta[name].float())
    evals = torch.linalg.eigvalsh(d.T @ d).clamp_min(0).sqrt().flip(0).double()
    ref = entropy_rank(_reference_sigma(ta[name], tb[name]))
    assert abs(entropy_rank(evals) - ref) / ref > 0.01


@pytest.mark.parametrize("name", list(SPECTRUM_CASES))
def test_blocks_give_the_numbers_of_one_block(spectrum_pair, name: str) -> None:
    root, _, _, one, blocked = spectrum_pair
    a, b = resolve(str(root / "a")), resolve(str(root / "b"))
    pair = next(p for p in align(a, b).pairs if p.name == name)
    assert len(plan_pair(pair, SMALL_BUDGET).blocks) > 1, "the small budget must cut this tensor"
    assert len(plan_pair(pair, DEFAULT_MEMORY_BUDGET).blocks) == 1
    m1, mb = module(one, name), module(blocked, name)
    for field in ("frob_norm", "frob_norm_relative", "cosine_sim", "sparsity"):
        assert getattr(mb, field) == pytest.approx(getattr(m1, field), rel=1e-9, abs=1e-12), field
    # spectra: summation order differs between one block and many; the route's precision bounds the rest
    for field in ("effective_rank", "stable_rank", "concentration_top_k"):
        assert getattr(mb, field) == pytest.approx(getattr(m1, field), rel=1e-4), field
    top = m1.top_singular_values[0]
    assert mb.top_singular_values == pytest.approx(m1.top_singular_values, rel=1e-4, abs=1e-6 * top)
    if SPECTRUM_CASES[name][0] != "low_rank_fp32":
        # an exactly low-rank delta's log-σ fit runs through its rounding-noise tail: not a stable number
        assert mb.spectral_alpha == pytest.approx(m1.spectral_alpha, rel=1e-3)


def test_column_blocks_cover_a_wide_matrix() -> None:
    """The wide case is fed column blocks into ΔΔᵀ; their union must be every column exactly once."""
    d = torch.randn(30, 500, dtype=torch.float64)
    whole = GramAccumulator(30, True, torch.device("cpu"))
    whole.add(d)
    parts = GramAccumulator(30, True, torch.device("cpu"))
    for start in range(0, 500, 37):
        parts.add(d[:, start:start + 37])
    s_whole, s_parts = whole.singular_values(), parts.singular_values()
    assert torch.allclose(s_whole, s_parts, rtol=1e-10)
    assert torch.allclose(s_whole, torch.linalg.svdvals(d), rtol=1e-8)
    assert summarize(s_parts, 5).top_k == 5


def test_identical_tensor_has_zero_spectrum(tmp_path: Path) -> None:
    t = {"layers.0.q_proj.weight": torch.randn(32, 32), "layers.0.q_proj.bias": torch.randn(32)}
    save_checkpoint(tmp_path / "a", t, config=TINY_CONFIG)
    save_checkpoint(tmp_path / "b", t, config=TINY_CONFIG)
    report = run_compare(tmp_path / "a", tmp_path / "b")
    w = module(report, "layers.0.q_proj.weight")
    assert w.identical and w.effective_rank == 0.0 and w.sparsity == 1.0 and w.frob_norm == 0.0
    assert report.diagnostics.method == "identical" and report.diagnostics.profile_tag == "identical"
