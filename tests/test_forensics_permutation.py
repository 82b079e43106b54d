"""`permutation` (docs/diagnosis.md): B's hidden units are A's in another order, found, verified and undone
before the other fingerprints read the aligned weights. Real models: all-MiniLM-L6-v2 (MLP units and attention
heads) and the tiny Qwen2 (gate/up/down units); the permuted models compute the same function as A."""

from __future__ import annotations

from pathlib import Path

import _forensics_derive as D
import _forensics_train as T
import pytest
import torch
from safetensors.torch import load_file

from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.diagnosis.codes import unregistered
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.models import ComparisonReport

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BERT_MLP_LAYERS = [1, 4]
BERT_HEAD_LAYERS = [2]
BERT_HEADS = 12
QWEN_MLP_LAYERS = [0, 3]
QWEN_HEAD_LAYERS = [1]  # grouped-query attention: a unit is a k/v head with the q heads sharing it
BERT = "encoder.layer.{}."
QWEN = "model.layers.{}."


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def permute_mlp(state: D.State, prefix: str, rows: list[str], cols: list[str], seed: int) -> D.State:
    """Intermediate units in another order: rows (and biases) of `rows`, columns of `cols`."""
    out = D.clone(state)
    n = out[prefix + rows[0] + ".weight"].shape[0]
    p = _perm(n, seed)
    for name in rows:
        for suffix in (".weight", ".bias"):
            if prefix + name + suffix in out:
                out[prefix + name + suffix] = out[prefix + name + suffix][p].contiguous()
    for name in cols:
        out[prefix + name + ".weight"] = out[prefix + name + ".weight"][:, p].contiguous()
    return out


def permute_heads(state: D.State, prefix: str, heads: int, seed: int) -> D.State:
    """BERT attention heads in another order: q/k/v row blocks (and biases), o column blocks."""
    out = D.clone(state)
    q = prefix + "attention.self.query.weight"
    dim = out[q].shape[0] // heads
    p = _perm(heads, seed)
    index = (p[:, None] * dim + torch.arange(dim)).flatten()
    for name in ("query", "key", "value"):
        for suffix in ("weight", "bias"):
            key = f"{prefix}attention.self.{name}.{suffix}"
            out[key] = out[key][index].contiguous()
    o = prefix + "attention.output.dense.weight"
    out[o] = out[o][:, index].contiguous()
    return out


def permute_kv_groups(state: D.State, prefix: str, kv_heads: int, seed: int) -> D.State:
    """Qwen2 k/v heads in another order, each with its group of q heads: q/k/v row blocks, o column blocks."""
    out = D.clone(state)
    p = _perm(kv_heads, seed)
    while bool((p == torch.arange(kv_heads)).all()):
        seed += 1
        p = _perm(kv_heads, seed)
    for name in ("q_proj", "k_proj", "v_proj"):
        for suffix in ("weight", "bias"):
            key = f"{prefix}self_attn.{name}.{suffix}"
            per = out[key].shape[0] // kv_heads
            out[key] = out[key][(p[:, None] * per + torch.arange(per)).flatten()].contiguous()
    o = prefix + "self_attn.o_proj.weight"
    per = out[o].shape[1] // kv_heads
    out[o] = out[o][:, (p[:, None] * per + torch.arange(per)).flatten()].contiguous()
    return out


def bert_permuted(base: D.State) -> D.State:
    state = base
    for layer in BERT_MLP_LAYERS:
        state = permute_mlp(state, BERT.format(layer), ["intermediate.dense"], ["output.dense"], seed=layer)
    for layer in BERT_HEAD_LAYERS:
        state = permute_heads(state, BERT.format(layer), BERT_HEADS, seed=100 + layer)
    return state


@pytest.fixture(scope="module")
def bert_pairs(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> dict[str, Path]:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("permutation-bert")
    base = load_file(str(minilm_dir / "model.safetensors"))
    permuted = bert_permuted(base)
    config = minilm_dir / "config.json"
    out = {"permuted": D.save_state(permuted, root / "permuted", config)}
    model = T.load_bert(minilm_dir)
    model.load_state_dict(permuted, strict=False)
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    _assert_same_function(minilm_dir, model, tok)
    T.bert_steps(model, tok, steps=3, lr=1e-4, wd=0.01)  # a real fine-tune of the permuted model
    out["permuted_finetuned"] = D.save_state(T.state_of(model), root / "permuted_finetuned", config)
    return out


def _assert_same_function(base_dir: Path, permuted: torch.nn.Module, tok) -> None:
    base = T.load_bert(base_dir).eval()
    permuted.eval()
    batch = tok(["a permuted model computes the same function", "hidden units"], return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (base(**batch).last_hidden_state - permuted(**batch).last_hidden_state).abs().max()
    assert float(diff) < 1e-4, f"the permutation changed the function: {float(diff)}"


def _report(a: Path, b: Path) -> ComparisonReport:
    report = compare(resolve_pair(str(a), str(b)), EngineOptions())
    for f in report.diagnostics.findings:
        assert unregistered(f.code, f.category, list(f.evidence)) is None
    return report


def _permutation(report: ComparisonReport) -> dict:
    hits = [f for f in report.diagnostics.findings if f.code == "permutation"]
    assert len(hits) == 1, [f.code for f in report.diagnostics.findings]
    return hits[0].evidence


def test_permuted_bert_is_a_permutation_of_a(bert_pairs: dict[str, Path], minilm_dir: Path) -> None:
    report = _report(minilm_dir, bert_pairs["permuted"])
    diag = report.diagnostics
    assert diag.method == "permutation" and diag.recipe == ["permutation"], (diag.method, diag.recipe)
    ev = _permutation(report)
    assert ev["layers"] == sorted(BERT_MLP_LAYERS + BERT_HEAD_LAYERS)
    assert ev["units"] == ["heads", "mlp"]
    assert ev["min_aligned_cosine"] == pytest.approx(1.0)
    assert all(m.identical for m in report.modules), "the aligned weights are bit-equal"
    assert diag.profile_tag == "identical"


def test_permuted_then_finetuned_bert_is_a_finetune_of_a(bert_pairs: dict[str, Path], minilm_dir: Path) -> None:
    report = _report(minilm_dir, bert_pairs["permuted_finetuned"])
    diag = report.diagnostics
    assert diag.recipe == ["permutation", "full_finetune"], diag.recipe
    assert diag.method == "permutation"
    ev = _permutation(report)
    assert ev["layers"] == sorted(BERT_MLP_LAYERS + BERT_HEAD_LAYERS)
    assert ev["units"] == ["heads", "mlp"]
    permuted = set(ev["tensors"])
    assert {"encoder.layer.1.intermediate.dense.weight", "encoder.layer.2.attention.self.query.weight",
            "encoder.layer.2.attention.output.dense.weight", "encoder.layer.4.output.dense.weight"} <= permuted
    rows = [m for m in report.modules if m.name in permuted and m.name.endswith("weight")]
    # the aligned weights: a few training steps move them by well under 1% (unaligned they would read ~√2)
    assert rows and max(m.frob_norm_relative for m in rows) < 0.05
    assert min(m.cosine_sim for m in rows) > 0.99
    assert report.totals.mean_relative_change < 0.05


def test_a_finetune_without_permutation_is_not_flagged(bert_pairs: dict[str, Path], minilm_dir: Path,
                                                       tmp_path: Path) -> None:
    """The same fine-tune steps without the permutation: no permutation finding, recipe as before."""
    from transformers import AutoTokenizer

    model = T.load_bert(minilm_dir)
    T.bert_steps(model, AutoTokenizer.from_pretrained(str(minilm_dir)), steps=2, lr=1e-4, wd=0.01)
    b = D.save_state(T.state_of(model), tmp_path / "tuned", minilm_dir / "config.json")
    diag = _report(minilm_dir, b).diagnostics
    assert "permutation" not in diag.recipe and diag.method == "full_finetune", diag.recipe


def test_permuted_qwen_mlp_units_and_kv_groups(tmp_path: Path) -> None:
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **T.QWEN_CONFIG}
    base = T.state_of(T.new_qwen())
    state = base
    for layer in QWEN_MLP_LAYERS:
        state = permute_mlp(state, QWEN.format(layer) + "mlp.", ["gate_proj", "up_proj"], ["down_proj"], seed=layer)
    for layer in QWEN_HEAD_LAYERS:
        state = permute_kv_groups(state, QWEN.format(layer), T.QWEN_CONFIG["num_key_value_heads"], seed=layer)
    ids = torch.arange(12)[None]
    model = T.new_qwen()
    model.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(T.new_qwen()(ids).logits, model(ids).logits, atol=1e-5)
    a = D.save_state(base, tmp_path / "a", config)
    b = D.save_state(state, tmp_path / "b", config)
    report = _report(a, b)
    assert report.diagnostics.recipe == ["permutation"], report.diagnostics.recipe
    ev = _permutation(report)
    assert ev["layers"] == sorted(QWEN_MLP_LAYERS + QWEN_HEAD_LAYERS) and ev["units"] == ["heads", "mlp"]
    assert all(m.identical for m in report.modules)


def test_assignment_resolves_argmax_collisions() -> None:
    """Two of B's units nearest to the same unit of A: the maximum total cosine assignment decides."""
    from modeldelta_mcp.engine.permutation import _assign

    sim = torch.tensor([[0.9, 0.8, 0.0], [0.95, 0.1, 0.0], [0.0, 0.2, 0.99]])
    assert _assign(sim).tolist() == [1, 0, 2]
