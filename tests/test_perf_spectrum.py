"""Gram routes: float32 products where they are safe, detection of the rounding floor, float64 fallback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from _perf_pairs import entropy_rank, reference_sigma, save_pair, spectrum_tensors

from modeldelta_mcp.align import align
from modeldelta_mcp.engine.run import EngineOptions, run_engine
from modeldelta_mcp.engine.spectrum import (
    GramAccumulator,
    eigvals_batch,
    route_for,
    spectrum_from_eigs,
)
from modeldelta_mcp.progress import Progress
from modeldelta_mcp.sources import resolve

CPU = torch.device("cpu")


def _route_spectrum(d: torch.Tensor, precision: str, blocks: int = 1):
    rows, cols = d.shape
    wide = rows < cols
    gram = GramAccumulator(min(rows, cols), wide, CPU, precision)  # type: ignore[arg-type]
    axis_len = cols if wide else rows
    step = -(-axis_len // blocks)
    for s in range(0, axis_len, step):
        gram.add(d[:, s:s + step] if wide else d[s:s + step])
    g, trace = gram.finish()
    return spectrum_from_eigs(eigvals_batch([g])[0], trace, g.dtype)


def test_routes_by_shape() -> None:
    assert route_for(4864, 896) == "float32"  # tall MLP matrix: products dominate
    assert route_for(896, 4864) == "float32"  # wide (down projection)
    assert route_for(896, 896) == "float64"  # square: the hard edge puts σ near zero
    assert route_for(1200, 896) == "float64"


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("wide", [False, True])
def test_panel_gram_is_the_gram(precision: str, wide: bool) -> None:
    d = torch.randn(300, 70, dtype=torch.float64)
    d = d.T.contiguous() if wide else d
    gram = GramAccumulator(70, wide, CPU, precision)  # type: ignore[arg-type]
    gram.add(d[:, :150] if wide else d[:150])
    gram.add(d[:, 150:] if wide else d[150:])
    g, trace = gram.finish()
    full = d @ d.T if wide else d.T @ d
    tol = 1e-5 if precision == "float32" else 1e-12
    torch.testing.assert_close(torch.triu(g.double()), torch.triu(full), rtol=tol, atol=tol * float(full.abs().max()))
    assert trace == pytest.approx(float(full.trace()), rel=tol)


def test_float32_route_stands_on_a_well_conditioned_delta() -> None:
    a, b = spectrum_tensors()
    name = "model.layers.0.mlp.up_proj.weight"
    d = (b[name] - a[name]).float()
    spec = _route_spectrum(d, "float32", blocks=3)
    assert spec.resolved
    ref = reference_sigma(a[name], b[name])
    assert entropy_rank(spec.sigma) == pytest.approx(entropy_rank(ref), rel=1e-3)
    torch.testing.assert_close(spec.sigma[:5], ref[:5], rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("name", ["model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.down_proj.weight"])
def test_float32_route_flags_an_exactly_low_rank_delta(name: str) -> None:
    a, b = spectrum_tensors()
    d = (b[name] - a[name]).float()
    spec = _route_spectrum(d, "float32")
    ref = entropy_rank(reference_sigma(a[name], b[name]))
    # the float32 answer is off by more than the parity tolerance: that is what the detector must see
    assert abs(entropy_rank(spec.sigma) - ref) / ref > 0.01
    assert not spec.resolved and spec.n_unresolved > 0
    # the float64 route is the fallback, and it is right
    spec64 = _route_spectrum(d, "float64")
    assert spec64.resolved
    assert entropy_rank(spec64.sigma) == pytest.approx(ref, rel=0.01)


def test_batched_eigensolves_equal_single_ones() -> None:
    gs = [(lambda x: x.T @ x)(torch.randn(50, 20, dtype=torch.float64)) for _ in range(3)]
    gs.append((lambda x: x.T @ x)(torch.randn(50, 30, dtype=torch.float64)))
    batched = eigvals_batch(gs)
    for g, ev in zip(gs, batched, strict=True):
        assert torch.equal(ev, torch.linalg.eigvalsh(g, UPLO="U"))


@pytest.fixture(scope="module")
def spectrum_run(tmp_path_factory: pytest.TempPathFactory):
    a, b = spectrum_tensors()
    pa, pb = save_pair(tmp_path_factory.mktemp("perf-spectrum"), a, b)
    ca, cb = resolve(str(pa)), resolve(str(pb))
    pairs = align(ca, cb).pairs
    run = run_engine(ca, cb, pairs, EngineOptions(device="cpu"))
    return a, b, {m.name: m for m in run.modules}, run.refined


@pytest.mark.parametrize("name", [
    "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight",
])
def test_engine_effective_rank_within_1pct_of_float64_svdvals(spectrum_run, name: str) -> None:
    a, b, mods, _ = spectrum_run
    ref = reference_sigma(a[name], b[name])
    m = mods[name]
    assert m.effective_rank == pytest.approx(entropy_rank(ref), rel=0.01)
    assert m.top_singular_values[0] == pytest.approx(float(ref[0]), rel=1e-5)
    assert m.n_singular_values == ref.numel()


def test_engine_recomputes_only_the_rank_deficient_ones(spectrum_run) -> None:
    *_, refined = spectrum_run
    # gate and down (exactly low rank, fp32) must be recomputed; up (well conditioned) must not.
    assert refined >= 2
    assert refined <= 3  # the bf16 LoRA merge may be, depending on where its rounding tail falls


def test_cancel_event_stops_the_engine(tmp_path: Path) -> None:
    a, b = spectrum_tensors()
    pa, pb = save_pair(tmp_path, a, b)
    ca, cb = resolve(str(pa)), resolve(str(pb))
    cancel = threading.Event()
    seen: list[int] = []

    def progress(p: Progress) -> None:
        seen.append(p.done)
        cancel.set()

    from modeldelta_mcp.errors import ModelDeltaError

    with pytest.raises(ModelDeltaError, match="cancelled"):
        run_engine(ca, cb, align(ca, cb).pairs, EngineOptions(device="cpu"), progress=progress, cancel=cancel)
    assert seen and max(seen) < len(align(ca, cb).pairs)
