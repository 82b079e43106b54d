"""Quantized checkpoints as they ship, compared with their source model (issue 11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import _quant_quanto as Q
import _quant_writers as W
import pytest
import torch
from _quant_gguf import hf_config, write_gguf

from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.inspection import describe
from modeldelta_mcp.models import ComparisonReport
from modeldelta_mcp.sources import resolve

pytestmark = pytest.mark.slow
QUERY = "encoder.layer.0.attention.self.query.weight"
# Relative error of round-to-nearest 4-bit weights of MiniLM (per group of 128 or block of 64): a few
# percent; 8-bit: a fraction of a percent. Bounds with margin, to catch a misdecoded tensor (error ~1).
MAX_REL_4BIT = 0.15
MAX_REL_8BIT = 0.02


def _compare(a: str | Path, b: str | Path) -> ComparisonReport:
    return compare(resolve_pair(str(a), str(b)), EngineOptions(spectrum="off"))


def _declared(report: ComparisonReport) -> dict:
    f = next(f for f in report.diagnostics.findings if f.code == "quantization_roundtrip")
    return f.evidence


@pytest.fixture(scope="session")
def qroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quant")


# ---- GGUF -----------------------------------------------------------------------------------------


def _tiny(kind: str, root: Path) -> Path:
    from transformers import GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # hidden 256: a multiple of the K-quants' 256-entry super-block; 4 heads of 64, 2 KV heads (GQA).
    kw = dict(vocab_size=320, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128)
    cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
           "gemma": (GemmaConfig, GemmaForCausalLM)}[kind]
    extra = {"head_dim": 64} if kind == "gemma" else {}
    model = cls[1](cls[0](**kw, **extra, tie_word_embeddings=kind == "gemma")).to(torch.bfloat16)
    if kind == "gemma":  # Gemma's norms start at 0 (it scales by 1 + w): give them values to carry
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.data.normal_(0, 0.1)
    out = root / kind
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_models(qroot: Path) -> dict[str, Path]:
    return {k: _tiny(k, qroot) for k in ("llama", "qwen2", "gemma")}


@pytest.mark.parametrize("arch,qtype,bits,group", [
    ("llama", "Q8_0", 8, 32), ("llama", "Q4_0", 4, 32), ("llama", "Q4_K", 4, 32),
    ("qwen2", "Q8_0", 8, 32), ("gemma", "Q8_0", 8, 32),
])
def test_gguf_against_source(tiny_models: dict[str, Path], qroot: Path, arch: str, qtype: str, bits: int,
                             group: int) -> None:
    src = tiny_models[arch]
    gguf_path = write_gguf(src, qroot / f"{arch}-{qtype}.gguf", arch, hf_config(src), qtype)
    b = resolve(str(gguf_path))
    assert b.fmt == "gguf" and b.config and b.config["num_hidden_layers"] == 2
    assert b.tensors["model.layers.0.self_attn.q_proj.weight"].stored_name == "blk.0.attn_q.weight"
    report = _compare(src, gguf_path)
    assert report.n_skipped == 0 and report.n_tensors == len(resolve(str(src)).tensors)
    assert report.diagnostics.method == "quantization_roundtrip"
    ev = _declared(report)
    assert (ev["declared_scheme"], ev["bits"], ev["group_size"], ev["consistency"]) == (qtype, bits, group,
                                                                                      "consistent")
    limit = MAX_REL_8BIT if bits == 8 else MAX_REL_4BIT
    mods = {m.name: m for m in report.modules}
    q = mods["model.layers.1.self_attn.q_proj.weight"]
    k = mods["model.layers.1.self_attn.k_proj.weight"]
    # Q and K read back in Hugging Face row order: their error is the grid's, like every other weight
    # (rows left permuted would be a different matrix, relative error ~1.4).
    assert q.stored_name == "blk.1.attn_q.weight" and q.quant_b == f"gguf:{qtype}:{bits}bit:g{group}"
    assert 0 < q.frob_norm_relative < limit and 0 < k.frob_norm_relative < limit
    assert all(m.frob_norm_relative < limit for m in report.modules)
    # norms (and Qwen2's biases) are stored as F32, unquantized: equal to the source, Gemma's 1 + w undone
    norms = [m for m in report.modules if m.role == "norm"]
    assert norms and ev["kept_roles"]["norm"] == len(norms)
    assert all(len(mods[n].shape) == 1 for n in ev["kept_tensors"])
    assert all(m.frob_norm_relative < 1e-6 for m in norms)
    assert {w["layer"] for w in ev["worst_layers"]} == {0, 1} and "attn_q" in ev["relative_error_by_role"]
    assert ev["error_vs_grid"] < 3.0  # a plain quantization of A: no more error than the grid makes
    assert ev["kept_changed"] == []
    if arch == "qwen2":
        assert "model.layers.0.self_attn.q_proj.bias" in mods
    info = report.checkpoints.b
    assert info.format == "gguf" and info.quantization[0].declared_scheme == qtype


def test_two_quantizations_and_a_quantized_fine_tune(tiny_models: dict[str, Path], qroot: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = tiny_models["llama"]
    q8 = write_gguf(src, qroot / "two-Q8_0.gguf", "llama", hf_config(src), "Q8_0")
    q4 = write_gguf(src, qroot / "two-Q4_0.gguf", "llama", hf_config(src), "Q4_0")
    report = _compare(q8, q4)
    ev = _declared(report)
    assert report.n_skipped == 0 and (ev["declared_scheme"], ev["declared_scheme_a"]) == ("Q4_0", "Q8_0")
    # a fine-tune of A (every matrix moved ~5%), then quantized to Q8_0: more error than the grid explains
    tuned = qroot / "llama-tuned"
    W.copy_tree(src, tuned)
    state = load_file(str(tuned / "model.safetensors"))
    gen = torch.Generator().manual_seed(3)
    for name, t in state.items():
        if t.dim() == 2:
            noise = torch.randn(t.shape, generator=gen) * t.float().std() * 0.05
            state[name] = (t.float() + noise).to(t.dtype)
    save_file(state, str(tuned / "model.safetensors"))
    tq8 = write_gguf(tuned, qroot / "tuned-Q8_0.gguf", "llama", hf_config(tuned), "Q8_0")
    report = _compare(src, tq8)
    ev = _declared(report)
    assert ev["error_vs_grid"] > 3.0
    assert "a fine-tune of A, then quantized" in next(f.detail for f in report.diagnostics.findings
                                                       if f.code == "quantization_roundtrip")


def test_gguf_rows_are_read_alone(tiny_models: dict[str, Path], qroot: Path) -> None:
    """Row reads of a permuted, quantized tensor equal the same rows of the whole tensor."""
    src = tiny_models["llama"]
    path = qroot / "llama-rows.gguf"
    write_gguf(src, path, "llama", hf_config(src), "Q4_0")
    reader = resolve(str(path)).open()
    name = "model.layers.0.self_attn.k_proj.weight"
    whole = reader.full(name)
    assert torch.equal(reader.rows(name, 37, 101), whole[37:101])
    assert torch.equal(reader.cols(name, 5, 9), whole[:, 5:9])


def test_gguf_path_in_cli_and_inspect(tiny_models: dict[str, Path], qroot: Path, tmp_cache: Path) -> None:
    src = tiny_models["qwen2"]
    path = write_gguf(src, qroot / "cli-Q8_0.gguf", "qwen2", hf_config(src), "Q8_0")
    out = qroot / "cli.json"
    res = subprocess.run([sys.executable, "-m", "modeldelta_mcp.cli", str(src), str(path), "-q", "-o", str(out),
                          "--spectrum", "off"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["diagnostics"]["method"] == "quantization_roundtrip"
    assert report["checkpoints"]["b"]["quantization"][0]["declared_scheme"] == "Q8_0"
    answer = describe(resolve(str(path)))
    assert answer.checkpoint.format == "gguf" and answer.checkpoint.architecture == "Qwen2ForCausalLM"
    group = answer.checkpoint.quantization[0]
    # 7 matrices in each of 2 layers, the embedding and the head
    assert (group.bits, group.group_size, group.n_tensors) == (8, 32, 16)


def test_gguf_not_a_gguf_file(qroot: Path) -> None:
    bad = qroot / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(SourceError, match=r"bad.gguf: not a readable GGUF file") as err:
        resolve(str(bad))
    assert "\n" not in str(err.value)


# ---- safetensors-based formats of MiniLM -----------------------------------------------------------


def test_gptq_against_source(minilm_dir: Path, qroot: Path) -> None:
    dst = W.write_gptq(minilm_dir, qroot / "gptq", bits=4, group=128)
    b = resolve(str(dst))
    ref = b.tensors[QUERY]
    assert (ref.stored_name, ref.shape, ref.quant) == ("encoder.layer.0.attention.self.query.qweight", (384, 384),
                                                       "gptq:gptq:4bit:g128")
    source = resolve(str(minilm_dir)).open().full(QUERY)
    assert torch.allclose(b.open().full(QUERY), W.fake_quant_gptq(source, 4, 128), atol=1e-6)
    report = _compare(minilm_dir, dst)
    ev = _declared(report)
    assert report.diagnostics.method == "quantization_roundtrip"
    assert (ev["format"], ev["bits"], ev["group_size"], ev["consistency"]) == ("gptq", 4, 128, "consistent")
    assert ev["n_tensors"] == 36 and "embed" in ev["kept_roles"] and "norm" in ev["kept_roles"]
    assert 0 < ev["median_relative_error"] < MAX_REL_4BIT


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_gptq_bits_and_act_order(minilm_dir: Path, qroot: Path, bits: int) -> None:
    # 3 bits: activation order (scattered g_idx); 8 bits: gptqmodel's gptq_v2 zero points
    dst = W.write_gptq(minilm_dir, qroot / f"gptq{bits}", bits=bits, group=64, act_order=bits == 3, v2=bits == 8)
    b = resolve(str(dst))
    source = resolve(str(minilm_dir)).open().full(QUERY).float()
    got = b.open().full(QUERY)
    from safetensors.torch import load_file

    g_idx = load_file(str(dst / "model.safetensors"))[QUERY.replace(".weight", ".g_idx")].long()
    assert torch.allclose(got, W.fake_quant_gptq(source, bits, 64, g_idx), atol=1e-6)
    rel = float((got - source).norm() / source.norm())
    # error halves per extra bit: 2 bits ~0.4, 3 bits ~0.2, 8 bits ~0.01
    assert rel < {2: 0.6, 3: 0.3, 8: 0.02}[bits]
    declared = "gptq_v2" if bits == 8 else "gptq"
    assert b.tensors[QUERY].quant == f"gptq:{declared}:{bits}bit:g64" + (":act_order" if bits == 3 else "")


def test_awq_against_source(minilm_dir: Path, qroot: Path) -> None:
    dst = W.write_awq(minilm_dir, qroot / "awq", group=64)
    b = resolve(str(dst))
    source = resolve(str(minilm_dir)).open().full(QUERY)
    assert torch.allclose(b.open().full(QUERY), W.fake_quant_gptq(source, 4, 64), atol=1e-6)
    ev = _declared(_compare(minilm_dir, dst))
    assert (ev["format"], ev["bits"], ev["group_size"], ev["consistency"]) == ("awq", 4, 64, "consistent")


@pytest.mark.parametrize("mode", ["nf4", "fp4", "int8"])
def test_bitsandbytes_against_source(minilm_dir: Path, qroot: Path, mode: str) -> None:
    try:
        dst = W.write_bnb(minilm_dir, qroot / f"bnb-{mode}", mode)
    except Exception as exc:  # the CPU backend of bitsandbytes is recent; say so rather than pass
        pytest.skip(f"bitsandbytes could not quantize {mode} on this CPU: {exc}")
    b = resolve(str(dst))
    assert b.fmt == "bitsandbytes" and b.tensors[QUERY].dtype == "float32"
    if mode != "int8":
        import bitsandbytes.functional as F
        from bitsandbytes.functional import QuantState
        from safetensors.torch import load_file

        sd = load_file(str(dst / "model.safetensors"))
        qs = QuantState.from_dict({k[len(QUERY) + 1:]: v for k, v in sd.items() if k.startswith(QUERY + ".")},
                                  device=torch.device("cpu"))
        assert torch.equal(b.open().full(QUERY), F.dequantize_4bit(sd[QUERY], qs).float())
    ev = _declared(_compare(minilm_dir, dst))
    bits = 8 if mode == "int8" else 4
    assert (ev["format"], ev["declared_scheme"], ev["bits"]) == ("bitsandbytes", mode, bits)
    assert ev["consistency"] in ("consistent", "unchecked") and ev["number_format"] == (
        "int_symmetric" if mode == "int8" else mode)
    assert 0 < ev["median_relative_error"] < (MAX_REL_8BIT if bits == 8 else MAX_REL_4BIT)


@pytest.mark.parametrize("fmt,bits,group,sym,kind,block", [
    ("pack-quantized", 4, 128, True, "int", None), ("pack-quantized", 4, 64, False, "int", None),
    ("int-quantized", 8, None, True, "int", None), ("float-quantized", 8, None, True, "float", None),
    ("float-quantized", 8, None, True, "float", 128),
])
def test_compressed_tensors_against_source(minilm_dir: Path, qroot: Path, fmt: str, bits: int, group: int | None,
                                           sym: bool, kind: str, block: int | None) -> None:
    dst = W.write_compressed(minilm_dir, qroot / f"ct-{fmt}-{group}-{sym}-{block}", fmt, bits, group, sym, kind=kind,
                             block=block)
    b = resolve(str(dst))
    module = QUERY[: -len(".weight")]
    assert torch.allclose(b.open().full(QUERY), W.decompress_reference(dst, module), atol=1e-6)
    if fmt != "pack-quantized":  # int-quantized is compared in test_declared_bits_contradicted_by_values
        assert b.tensors[QUERY].quant == f"compressed-tensors:{fmt}:8bit:" + ("b128" if block else "per_row")
        return
    ev = _declared(_compare(minilm_dir, dst))
    assert (ev["format"], ev["declared_scheme"], ev["bits"], ev["group_size"]) == ("compressed-tensors", fmt, bits,
                                                                                   group)
    assert ev["consistency"] == "consistent"


def test_declared_bits_contradicted_by_values(minilm_dir: Path, qroot: Path) -> None:
    """A file whose config says 4 bits but whose int8 values use the full 8-bit range."""
    dst = W.write_compressed(minilm_dir, qroot / "ct-lying", "int-quantized", 8, None, True, declare_bits=4)
    report = _compare(minilm_dir, dst)
    ev = _declared(report)
    assert ev["bits"] == 4 and ev["consistency"] == "inconsistent" and ev["inconsistent_tensors"]
    f = next(f for f in report.diagnostics.findings if f.code == "quantization_roundtrip")
    assert f.severity == "warning" and "contradict" in f.detail


@pytest.mark.parametrize("granularity", ["block", "channel", "tensor"])
def test_fp8_against_source(minilm_dir: Path, qroot: Path, granularity: str) -> None:
    from safetensors.torch import load_file

    dst = W.write_fp8(minilm_dir, qroot / f"fp8-{granularity}", granularity)
    b = resolve(str(dst))
    assert b.fmt == "fp8"
    stored = load_file(str(dst / "model.safetensors"))
    scale = stored[QUERY + ("_scale_inv" if granularity == "block" else "_scale")]
    w = stored[QUERY].float()
    want = w * (scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[: w.shape[0], : w.shape[1]]
                if granularity == "block" else scale)
    assert torch.equal(b.open().full(QUERY), want)
    gran = {"block": "per_block", "channel": "per_row", "tensor": "per_tensor"}[granularity]
    if granularity != "block":  # one comparison is enough to check the diagnosis; the others check values
        return
    ev = _declared(_compare(minilm_dir, dst))
    assert (ev["format"], ev["number_format"], ev["granularity"]) == ("fp8", "fp8_e4m3", gran)
    assert 0 < ev["median_relative_error"] < 0.05  # e4m3 keeps 3 mantissa bits: ~2% RMS
    assert ev["error_vs_grid"] is None  # a float grid: the uniform-grid estimate does not apply


# ---- optimum-quanto: checkpoints quanto itself wrote ------------------------------------------------
# quanto's group for a 2/4-bit weight: 128 inputs (every MiniLM input width, 384 and 1536, is a multiple).
QUANTO_GROUP = 128
# Bounds on each weight's relative error. quanto's int8 scale is one absmax per output row: MiniLM's
# outlier inputs widen the step of a 1536-wide row to ~2% error (GGUF's blocks of 32 stay under 1%);
# e4m3 keeps 3 mantissa bits (~2.5%); 2 bits leave 4 levels a group (~0.5-0.6).
QUANTO_ERROR = {"qint8": 0.04, "qfloat8_e4m3fn": 0.05, "qint4": MAX_REL_4BIT, "qint2": 0.8}
# 6 layers × 6 Linear modules and the pooler
QUANTO_WEIGHTS = 37


@pytest.fixture(scope="session")
def quanto_ckpts(minilm_dir: Path, qroot: Path) -> dict[str, Q.QuantoCheckpoint]:
    """qint8, qint4, qint2 and qfloat8 by quanto's quantize()/freeze() with a quantization map; qint4 with
    uint8 zero points and of the bf16 model; int8 by transformers' QuantoConfig; qint4 without its biases.
    Built once."""
    root = qroot / "quanto"
    out = {q: Q.write_quanto(minilm_dir, root / q, q) for q in QUANTO_ERROR}
    out["qint4-zeropoint"] = Q.write_quanto(minilm_dir, root / "qint4-zp", "qint4", zeropoint=True)
    out["qint4-bf16"] = Q.write_quanto(minilm_dir, root / "qint4-bf16", "qint4", dtype=torch.bfloat16)
    out["config-int8"] = Q.write_quanto(minilm_dir, root / "config-int8", "qint8", declare="config")
    out["qint4-nobias"] = Q.without_biases(out["qint4"], root / "qint4-nobias")
    return out


def _equals_quanto(ckpt: Q.QuantoCheckpoint) -> None:
    reader = resolve(str(ckpt.path)).open()
    for name, want in ckpt.reference.items():
        assert torch.equal(reader.full(name), want), name


@pytest.mark.parametrize("qtype", list(QUANTO_ERROR))
def test_quanto_against_source(minilm_dir: Path, quanto_ckpts: dict[str, Q.QuantoCheckpoint], qtype: str) -> None:
    ckpt = quanto_ckpts[qtype]
    b = resolve(str(ckpt.path))
    bits = 8 if qtype in ("qint8", "qfloat8_e4m3fn") else int(qtype[-1])
    group = None if bits == 8 else QUANTO_GROUP
    ref = b.tensors[QUERY]
    assert b.fmt == "quanto" and ref.shape == (384, 384) and ref.stored_name == QUERY + (
        "._data" if bits == 8 else "._data._data")
    assert ref.quant == f"quanto:{qtype}:{bits}bit:" + (f"g{group}" if group else "per_row")
    assert not [n for n in b.tensors if n.endswith(("input_scale", "output_scale"))]  # calibration, no weights
    _equals_quanto(ckpt)
    report = _compare(minilm_dir, ckpt.path)
    # transformers' BertModel keeps position ids as a buffer out of its state_dict: the one tensor only in A
    assert [(s.name, s.reason) for s in report.skipped] == [("embeddings.position_ids", "only in A")]
    assert report.diagnostics.method == "quantization_roundtrip"
    ev = _declared(report)
    number = {"qint8": "int_symmetric", "qfloat8_e4m3fn": "fp8_e4m3"}.get(qtype, "int_asymmetric")
    assert (ev["format"], ev["declared_scheme"], ev["bits"], ev["group_size"], ev["number_format"]) == (
        "quanto", qtype, bits, group, number)
    assert ev["granularity"] == ("per_group" if group else "per_row") and ev["n_tensors"] == QUANTO_WEIGHTS
    # a uniform integer grid per row or group of 128: the values lie on it (a float grid may stay unchecked)
    assert ev["consistency"] == "consistent" if number != "fp8_e4m3" else ev["consistency"] != "inconsistent"
    limit = QUANTO_ERROR[qtype]
    quantized = [m for m in report.modules if m.quant_b]
    assert len(quantized) == QUANTO_WEIGHTS and all(0 < m.frob_norm_relative < limit for m in quantized)
    assert 0 < ev["median_relative_error"] < limit and {w["layer"] for w in ev["worst_layers"]} <= set(range(6))
    assert len(ev["worst_layers"]) == 3 and "attn_q" in ev["relative_error_by_role"]
    # embeddings, norms and biases are left as they were
    assert {"embed", "norm"} <= set(ev["kept_roles"]) and ev["kept_changed"] == []
    if ev["expected_relative_error"] is not None:  # integer grids: no more error than quantizing A makes
        assert ev["error_vs_grid"] < 3.0
    assert report.checkpoints.b.format == "quanto"


def test_quanto_zero_points_bf16_and_quanto_config(quanto_ckpts: dict[str, Q.QuantoCheckpoint]) -> None:
    """uint8 zero points (W = scale·(q − z)); a bf16 model (quanto dequantizes in bf16: so does the reader);
    transformers' QuantoConfig declared in config.json."""
    from safetensors import safe_open

    zp, bf16 = quanto_ckpts["qint4-zeropoint"], quanto_ckpts["qint4-bf16"]
    with safe_open(str(zp.path / "model.safetensors"), "pt") as f:
        assert f.get_slice(QUERY + "._shift").get_dtype() == "U8"
    with safe_open(str(bf16.path / "model.safetensors"), "pt") as f:
        assert f.get_slice(QUERY + "._scale").get_dtype() == "BF16"
    _equals_quanto(zp)
    _equals_quanto(bf16)
    cfg = quanto_ckpts["config-int8"]
    assert not (cfg.path / "quantization_map.json").exists()
    assert json.loads((cfg.path / "config.json").read_text())["quantization_config"]["quant_method"] == "quanto"
    b = resolve(str(cfg.path))
    assert b.fmt == "quanto" and b.tensors[QUERY].quant == "quanto:qint8:8bit:per_row"
    _equals_quanto(cfg)
    # the declaration reaches the report as the map's does (test_quanto_against_source compares qint8)
    (group,) = describe(b).checkpoint.quantization
    assert (group.declared_scheme, group.bits, group.granularity, group.n_tensors) == ("qint8", 8, "per_row",
                                                                                    QUANTO_WEIGHTS)


def test_quanto_shapes_without_biases(minilm_dir: Path, quanto_ckpts: dict[str, Q.QuantoCheckpoint]) -> None:
    """Grouped weights without a bias: the file holds no shape. Alone they keep the stored layout (rows of
    128); against their source, in either order, the source's shapes are taken and every weight aligns."""
    ckpt = quanto_ckpts["qint4-nobias"]
    wide = "encoder.layer.2.output.dense.weight"  # [384, 1536]: 1536/128 = 12 stored rows per output
    alone = resolve(str(ckpt.path))
    assert alone.tensors[wide].shape == (384 * 12, QUANTO_GROUP)
    assert torch.equal(alone.open().full(wide).reshape(384, 1536), ckpt.reference[wide])
    for a, b in ((minilm_dir, ckpt.path), (ckpt.path, minilm_dir)):
        report = _compare(a, b)
        mods = {m.name: m for m in report.modules}
        assert mods[wide].shape == [384, 1536] and 0 < mods[wide].frob_norm_relative < MAX_REL_4BIT
        assert not [s for s in report.skipped if "shape mismatch" in s.reason]
    pair = resolve_pair(str(ckpt.path), str(minilm_dir))
    assert torch.equal(pair.a.open().full(wide), ckpt.reference[wide])


def test_quanto_inspect_from_headers(quanto_ckpts: dict[str, Q.QuantoCheckpoint]) -> None:
    path = quanto_ckpts["qint4"].path
    answer = describe(resolve(str(path)))
    assert answer.checkpoint.format == "quanto" and answer.checkpoint.architecture == "BertModel"
    (group,) = answer.checkpoint.quantization
    assert (group.declared_scheme, group.bits, group.group_size, group.n_tensors) == ("qint4", 4, QUANTO_GROUP,
                                                                                   QUANTO_WEIGHTS)
    res = subprocess.run([sys.executable, "-m", "modeldelta_mcp.cli", "inspect", str(path)], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)["checkpoint"]
    assert shown["format"] == "quanto" and shown["quantization"][0]["label"] == "quanto:qint4:4bit:g128"


def test_quanto_from_the_hub(minilm_dir: Path, quanto_ckpts: dict[str, Q.QuantoCheckpoint], qroot: Path) -> None:
    """A hub download fetches the quantization map with config.json (a plain safetensors read without it)."""
    import os

    from _core_fakehub import FakeHub

    path = quanto_ckpts["qint4"].path
    files = {name: (path / name).read_bytes() for name in ("config.json", "model.safetensors",
                                                           "quantization_map.json")}
    out = qroot / "hub-quanto.json"
    with FakeHub() as hub:
        hub.add_repo("org/minilm-quanto", {"main": files})
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(qroot / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "MODELDELTA_CACHE_DIR": str(qroot / "hub-store"),
               "HF_HUB_DISABLE_XET": "1"}
        res = subprocess.run([sys.executable, "-m", "modeldelta_mcp.cli", str(minilm_dir), "org/minilm-quanto", "-q",
                              "-o", str(out), "--spectrum", "off"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["checkpoints"]["b"]["format"] == "quanto"
    assert report["checkpoints"]["b"]["quantization"][0]["label"] == "quanto:qint4:4bit:g128"


# ---- bad input ---------------------------------------------------------------------------------------


def test_corrupt_packed_tensor_is_one_line(minilm_dir: Path, qroot: Path) -> None:
    from safetensors.torch import load_file, save_file

    dst = W.write_gptq(minilm_dir, qroot / "gptq-corrupt", bits=4, group=128)
    state = load_file(str(dst / "model.safetensors"))
    key = "encoder.layer.2.attention.output.dense.qweight"
    state[key] = state[key][:-3].contiguous()  # rows for fewer inputs than g_idx names
    save_file(state, str(dst / "model.safetensors"))
    with pytest.raises(SourceError, match=r"corrupt quantized tensor encoder\.layer\.2\.attention\.output\.dense"
                                          r"\.qweight \(shape \[45, 384\], \[48, 384\] expected") as err:
        resolve(str(dst))
    assert "\n" not in str(err.value)


def test_unsupported_scheme_is_named(minilm_dir: Path, qroot: Path) -> None:
    dst = W.copy_tree(minilm_dir, qroot / "hqq")
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "hqq", "nbits": 4}
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SourceError, match=r"unsupported quantization scheme 'hqq'"):
        resolve(str(dst))


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"])
def test_gguf_names_invert_llama_cpp_table(arch: str) -> None:
    """Every Hugging Face name llama.cpp's own table (gguf.TensorNameMap) maps forward comes back."""
    import gguf

    from modeldelta_mcp.sources.quantized.gguf_names import ARCHITECTURES, hf_name

    names = ARCHITECTURES[arch]
    gguf_arch = "LLAMA" if arch == "mistral" else arch.upper()  # the converter writes Mistral as llama
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, gguf_arch), 3)
    hf = [f"model.layers.2.{m}.{p}" for m in set(names.block.values()) for p in ("weight", "bias")]
    hf += ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    checked = 0
    for name in hf:
        stored = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if stored is None:  # a module this architecture does not have (Gemma 2 has no q_norm)
            continue
        assert hf_name(names, stored) == name, (stored, name)
        checked += 1
    assert checked >= 9 + 3  # at least the weights of a block's 9 modules and the 3 global tensors


def test_quanto_corrupt_packed_tensor_and_unknown_qtype(quanto_ckpts: dict[str, Q.QuantoCheckpoint],
                                                      qroot: Path) -> None:
    from safetensors.torch import load_file, save_file

    dst = W.copy_tree(quanto_ckpts["qint4"].path, qroot / "qc")
    state = load_file(str(dst / "model.safetensors"))
    key = "pooler.dense.weight._data._data"
    state[key] = state[key][:-1].contiguous()  # codes for fewer rows than its 1152 scales
    save_file(state, str(dst / "model.safetensors"))
    with pytest.raises(SourceError, match=r"corrupt quantized tensor pooler\.dense\.weight\._data\._data \(shape "
                                          r"\[575, 128\], \[576, 128\] expected at 4 bits for 1152 scales\)") as err:
        resolve(str(dst))
    assert "\n" not in str(err.value)
    # the map declares 2 bits for 4-bit codes: the packed rows are twice what 2 bits need
    dst = W.copy_tree(quanto_ckpts["qint4"].path, qroot / "qb")
    qmap = json.loads((dst / "quantization_map.json").read_text())
    qmap["pooler.dense"]["weights"] = "qint2"
    (dst / "quantization_map.json").write_text(json.dumps(qmap))
    with pytest.raises(SourceError, match=r"pooler\.dense\.weight\._data\._data \(shape \[576, 128\], \[288, 128\] "
                                          r"expected at 2 bits"):
        resolve(str(dst))
    qmap["pooler.dense"]["weights"] = "qfloat8_e4m3fnuz"
    (dst / "quantization_map.json").write_text(json.dumps(qmap))
    with pytest.raises(SourceError, match=r"quantization_map\.json: unsupported optimum-quanto weight qtype "
                                          r"'qfloat8_e4m3fnuz' \(module pooler\.dense") as err:
        resolve(str(dst))
    assert "\n" not in str(err.value)
