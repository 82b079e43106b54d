"""The forensic building blocks on synthetic data: grid tests, float-cast counters, the MP law, the rules
that keep lookalikes apart (structured zeros, random zeroing, a lone untouched pooler), adapter errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _forensics_derive import magnitude_prune, quantize_groups_asymmetric, quantize_rows_symmetric, save_state

from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.diagnosis import marchenko_pastur
from modeldelta_mcp.diagnosis.fingerprints import detect_all, primary_method
from modeldelta_mcp.diagnosis.fingerprints.context import layer_template
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.engine.accumulate import DeltaAccumulator
from modeldelta_mcp.engine.quant_fit import fit_quantizer
from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.models import ForensicCounters, ModuleDelta

U32 = 2.0**-24


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_forensics_grid_test_finds_int8_rows_and_int4_groups_not_floats() -> None:
    w = torch.randn(32, 256, generator=_gen()) * 0.05
    fit, legacy = fit_quantizer(quantize_rows_symmetric(w, 8), U32)
    assert fit is not None and (fit.number_format, fit.granularity, fit.bits) == ("int_symmetric", "per_row", 8)
    assert legacy["row"].tested == legacy["row"].on_grid == 32
    fit, legacy = fit_quantizer(quantize_groups_asymmetric(w, 4, 64), U32)
    assert fit is not None and (fit.number_format, fit.granularity, fit.group_size, fit.bits) == \
        ("int_asymmetric", "per_group", 64, 4)
    assert legacy["row"].on_grid == 0  # a whole row mixes four groups' scales: no common grid
    assert fit_quantizer(w, U32)[0] is None
    assert fit_quantizer(w.half().float(), 2.0**-11)[0] is None  # a float format: a grid per binade, > 8 bits
    assert fit_quantizer(w.bfloat16().float(), 2.0**-9)[0] is None


def test_forensics_float_cast_counters_tell_fp16_from_bf16() -> None:
    a = torch.randn(64, 64, generator=_gen(1)) * 0.05
    for dtype, key in ((torch.float16, "float16"), (torch.bfloat16, "bfloat16")):
        acc = DeltaAccumulator()
        acc.add(a, a.to(dtype).float())
        f = acc.forensics()
        nnz = f.n_nonzero_delta
        assert nnz and f.cast(key) == (True, nnz)
    acc = DeltaAccumulator()
    acc.add(a, a.to(torch.bfloat16).float())
    f = acc.forensics()
    assert (f.n_rounded_float16 or 0) < (f.n_nonzero_delta or 0)  # bf16 steps are 8 fp16 ULPs wide
    acc = DeltaAccumulator()
    acc.add(a, a + 1e-3)
    assert acc.forensics().b_on_float16_grid == 0.0


@pytest.mark.parametrize("shape", [(32, 64), (384, 384), (1536, 384)])
def test_forensics_mp_quantiles_match_simulated_noise(shape: tuple[int, int]) -> None:
    x = torch.randn(*shape, generator=_gen(2), dtype=torch.float64)
    s = torch.linalg.svdvals(x).flip(0)
    e = marchenko_pastur.edge(*shape, float(x.norm()) / math.sqrt(x.numel()))
    probs = (0.1, 0.5, 0.9)
    emp = torch.quantile(s, torch.tensor(probs, dtype=torch.float64)) / e
    theory = torch.tensor(marchenko_pastur.sigma_quantiles(*shape, probs), dtype=torch.float64)
    assert float((emp - theory).abs().max()) <= 0.02 + 2 / min(shape)


def test_forensics_layer_template() -> None:
    m = _row("model.layers.12.self_attn.q_proj.weight", "attn_q", 12)
    assert layer_template(m) == "model.layers.{}.self_attn.q_proj.weight"
    assert layer_template(_row("embed.weight", "embed", None)) is None


def _row(name: str, role: str, layer: int | None, identical: bool = True, shape=(8, 8)) -> ModuleDelta:
    n = 1
    for s in shape:
        n *= s
    return ModuleDelta(name=name, role=role, layer=layer, shape=list(shape), n_params=n, dtype_a="float32",
                       dtype_b="float32", frob_norm=0.0 if identical else 1.0,
                       frob_norm_relative=0.0 if identical else 0.1, cosine_sim=1.0, sparsity=1.0 if identical else 0.0,
                       identical=identical, has_svd=len(shape) == 2, in_profile=n >= 1000)


def test_forensics_untouched_pooler_alone_is_not_frozen_modules() -> None:
    mods = [_row(f"layers.{i}.q.weight", "attn_q", i, identical=False) for i in range(3)]
    mods.append(_row("pooler.dense.weight", "pooler", None))
    assert "frozen_modules" not in {f.code for f in detect_all(mods)}
    mods.append(_row("layers.3.q.weight", "attn_q", 3))
    found = {f.code: f for f in detect_all(mods)}
    assert found["frozen_modules"].evidence["frozen_layers"] == [3]


def test_forensics_no_fingerprint_falls_back_and_says_so() -> None:
    assert primary_method([]) == "full_finetune"
    from modeldelta_mcp.diagnosis import diagnose

    mods = [_row(f"layers.{i}.q.weight", "attn_q", i, identical=False) for i in range(3)]
    assert "No method fingerprint matched" in diagnose(mods, "a", "b").summary


# ---- engine + diagnosis on small synthetic checkpoints ---------------------------------------------------


def _pair(tmp: Path, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    pa, pb = save_state(a, tmp / "a", {"model_type": "llama"}), save_state(b, tmp / "b", {"model_type": "llama"})
    return compare(resolve_pair(str(pa), str(pb)), EngineOptions()).diagnostics


def _tiny(seed: int = 3) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    out = {}
    for i in range(4):
        for n, shape in (("self_attn.q_proj", (64, 64)), ("self_attn.o_proj", (64, 64)), ("mlp.up_proj", (128, 64)),
                         ("mlp.down_proj", (64, 128))):
            out[f"model.layers.{i}.{n}.weight"] = torch.randn(*shape, generator=g) * 0.05
        out[f"model.layers.{i}.input_layernorm.weight"] = 1 + 0.1 * torch.randn(64, generator=g)
    return out


def test_forensics_random_zeroing_is_not_magnitude_pruning(tmp_path: Path) -> None:
    a = _tiny()
    g = _gen(4)
    rand = {k: torch.where(torch.rand(v.shape, generator=g) < 0.5, torch.zeros_like(v), v) if v.dim() == 2 else v
            for k, v in a.items()}
    assert "pruning" not in {f.code for f in _pair(tmp_path / "r", a, rand).findings}
    mag = {k: magnitude_prune(v, 0.5) if v.dim() == 2 else v for k, v in a.items()}
    diag = _pair(tmp_path / "m", a, mag)
    assert diag.method == "pruning"
    assert abs(next(f for f in diag.findings if f.code == "pruning").evidence["fraction"] - 0.5) < 0.01


def test_forensics_whole_row_updates_are_not_a_sparse_delta(tmp_path: Path) -> None:
    """Rows changed whole (unseen tokens, masks) leave most entries unchanged, but not at random."""
    a = _tiny()
    g = _gen(5)
    b = {}
    for k, v in a.items():
        if v.dim() == 2:
            rows = torch.rand(v.shape[0], 1, generator=g) < 0.3
            b[k] = v + rows * 1e-3 * torch.randn(v.shape, generator=g)
        else:
            b[k] = v
    assert "sparse_delta" not in {f.code for f in _pair(tmp_path / "rows", a, b).findings}
    iid = {k: v + (torch.rand(v.shape, generator=g) < 0.3) * 1e-3 * torch.randn(v.shape, generator=g)
           if v.dim() == 2 else v for k, v in a.items()}
    diag = _pair(tmp_path / "iid", a, iid)
    assert diag.method == "sparse_delta"
    assert abs(next(f for f in diag.findings if f.code == "sparse_delta").evidence["density"] - 0.3) < 0.02


def test_forensics_adapter_errors_name_the_culprit(tmp_path: Path) -> None:
    from modeldelta_mcp.sources.peft_adapter import load_adapter

    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    with pytest.raises(SourceError, match="only be model_b"):
        load_adapter(str(ad), ad, base=None)
    base = resolve_pair(str(save_state(_tiny(), tmp_path / "base", None)), str(tmp_path / "base")).a
    with pytest.raises(SourceError, match="no adapter weights"):
        load_adapter(str(ad), ad, base=base)
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(SourceError, match="IA3 is not supported"):
        load_adapter(str(ad), ad, base=base)
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "use_dora": True}))
    with pytest.raises(SourceError, match="DoRA"):
        load_adapter(str(ad), ad, base=base)
    from safetensors.torch import save_file

    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    save_file({"base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": torch.zeros(2, 64),
               "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)},
              str(ad / "adapter_model.safetensors"))
    with pytest.raises(SourceError, match=r"layers\.9\.self_attn\.q_proj\.weight"):
        load_adapter(str(ad), ad, base=base)


def test_forensics_counters_absent_stay_out_of_the_json_and_round_trip() -> None:
    acc = DeltaAccumulator()
    a = torch.randn(40, 64, generator=_gen(3))
    acc.add(a, a + 1e-3)
    f = acc.forensics()
    dumped = json.loads(f.model_dump_json())
    assert "numel" in dumped and "sv_rank" not in dumped and None not in dumped.values()  # no spectrum noted
    assert ForensicCounters.model_validate(dumped) == f
    assert f.quant("row") is None and f.quant_b is None  # random rows fail the quantizer gate: nothing tested
    assert f.deciles() is None
    acc.note_spectrum(torch.linalg.svdvals((torch.full((40, 64), 1e-3)).double()), 40, 64)
    assert acc.forensics().deciles() is not None and acc.forensics().sv_rank == 1.0


def test_forensics_diagnosis_imports_nothing_from_the_engine() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent / "modeldelta_mcp" / "diagnosis"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith("modeldelta_mcp.engine") for n in names), f"{path.name} imports {names}"


def test_forensic_counter_table_holds_every_name_the_code_builds() -> None:
    """counters.toml declares the counters as data; the names the engine and diagnosis build from parts
    (grid tests per granularity, deciles, cast flags, the mirrored set) must all be fields of the model."""
    from modeldelta_mcp.numerics import DECILE_KEYS, QUANT_GRANULARITIES

    fields = set(ForensicCounters.model_fields)
    built = {f"q_{label}_{part}" for label in QUANT_GRANULARITIES for part in ("n", "grid", "bits", "levels", "size")}
    built |= set(DECILE_KEYS)
    for fmt in ("float16", "bfloat16"):
        built |= set(ForensicCounters.cast_fields(fmt, True, 1))
    built |= set(ForensicCounters.cast_fields_a(True, False, 1, 0))
    assert built <= fields, sorted(built - fields)
    full = ForensicCounters(**{k: 1.0 for k in fields if not k.startswith("quant_")})
    assert set(full.mirrored().model_dump()) <= fields
    # a misspelt counter is refused, not silently carried
    with pytest.raises(ValueError, match="numell"):
        ForensicCounters(numell=1.0)


@pytest.mark.parametrize("mlp_changed,title", [
    (False, "Attention changed more than MLP"),  # LoRA on q/v: the MLP untouched
    (True, "Balanced attention/MLP changes"),
])
def test_seed_attention_finding_names_attention_only_updates(mlp_changed: bool, title: str) -> None:
    from modeldelta_mcp.diagnosis.profiles import seed_findings

    mods = [_row(f"layers.{i}.q.weight", "attn_q", i, identical=False) for i in range(3)]
    mods += [_row(f"layers.{i}.up.weight", "mlp_up", i, identical=not mlp_changed) for i in range(3)]
    found = {f.code: f for f in seed_findings(mods)}
    assert found["attention"].title == title


def _rescaled_rank(a: torch.Tensor, b: torch.Tensor, spectrum: bool = False) -> float | None:
    """The engine's rescaled-rank counter of a pair fed in two row chunks (the sample spans both)."""
    acc = DeltaAccumulator()
    acc.add(a[:40], b[:40])
    acc.add(a[40:], b[40:])
    if spectrum:  # the exact spectrum says how low the rank of Δ itself is (the engine's flag)
        sigma = torch.linalg.svdvals(b.double() - a.double())
        acc.note_spectrum(sigma, *a.shape)
    return acc.forensics().rescaled_rank


def test_forensics_rescaled_rank_reads_a_dora_merge_and_nothing_else() -> None:
    """B = diag(f)·(A + L), L of rank 6 (PEFT's DoRA merge): rank 6 after a per-row rescale, in fp32 and bf16;
    a dense update, a pure rescale, and rows of A mixed with each other (not a rescale) are not read so."""
    g = _gen(7)
    a = torch.randn(128, 384, generator=g) * 0.05
    low = (torch.randn(128, 6, generator=g) * 0.02) @ (torch.randn(6, 384, generator=g) * 0.1)
    f = 1 + 0.01 * torch.randn(128, 1, generator=g)
    dora = f * (a + low)
    assert _rescaled_rank(a, dora) == 6.0
    assert _rescaled_rank(a, dora, spectrum=True) == 6.0  # Δ itself is full rank: the flag lets it through
    assert _rescaled_rank(a, dora.bfloat16().float()) == 6.0  # saved in bf16: read above the rounding bulk
    assert _rescaled_rank(a, a + low, spectrum=True) is None  # a plain LoRA is low rank already: not tested
    assert _rescaled_rank(a, a + low) is None  # (tested without a spectrum: c = 0 fits, no rescale is needed)
    assert _rescaled_rank(a, a + 1e-3 * torch.randn(128, 384, generator=g)) is None  # dense
    assert _rescaled_rank(a, f * a) is None  # a rescale alone has rank 0: no LoRA
    mix = torch.eye(128)
    mix[:64, :64] += 0.01 * torch.randn(64, 64, generator=g)  # within the sampled rows: Δ off A's rows is L alone
    assert _rescaled_rank(a, mix @ a + low) is None  # rows of B mix rows of A: not a per-row rescale
