"""Filters, base inference from local files, and the claim verdicts, without a hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _core_ckpt import TINY_CONFIG, save_checkpoint

from modeldelta_mcp.align import align
from modeldelta_mcp.compare import compare, resolve_pair
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.errors import AlignmentError, ModelDeltaError
from modeldelta_mcp.lineage import claim_of, infer_base
from modeldelta_mcp.select import TensorFilter, parse_layers


def _tensors(seed: int, layers: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {"model.embed_tokens.weight": torch.randn(40, 16, generator=g), "model.norm.weight": torch.ones(16)}
    for i in range(layers):
        for p in ("q_proj", "o_proj"):
            t[f"model.layers.{i}.self_attn.{p}.weight"] = torch.randn(16, 16, generator=g)
        t[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(32, 16, generator=g)
    return t


def _tuned(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.dim() == 2 else v for k, v in t.items()}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("units")
    base = _tensors(0)
    out = {"base": save_checkpoint(root / "base", base, config=TINY_CONFIG),
           "tuned": save_checkpoint(root / "tuned", _tuned(base), config=TINY_CONFIG),
           "other": save_checkpoint(root / "other", _tensors(42), config=TINY_CONFIG)}
    (out["tuned"] / "README.md").write_text(f"---\nbase_model: {out['base']}\nlicense: mit\n---\n# tuned\n")
    (out["other"] / "README.md").write_text(
        f"---\nbase_model: {out['base']}\nbase_model_relation: finetune\n---\n# claims too much\n")
    return out


def test_parse_layers() -> None:
    assert parse_layers("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_layers(" 5 , 1-2 ") == (1, 2, 5)
    for bad in ("", "a", "3-1", "1,,2", "0-999999"):
        with pytest.raises(ModelDeltaError, match="layers"):
            parse_layers(bad)


def test_filter_semantics() -> None:
    f = TensorFilter.of(include=["*.q_proj.*", "*.o_proj.*"], exclude=["*.layers.1.*"])
    assert f.keeps_name("model.layers.0.self_attn.q_proj.weight")  # `*` crosses dots
    assert not f.keeps_name("model.layers.1.self_attn.q_proj.weight")  # an exclude wins
    assert not f.keeps_name("model.layers.0.mlp.up_proj.weight")  # no include matches
    assert TensorFilter.of(exclude=["*norm*"]).keeps_name("model.embed_tokens.weight")  # no include: all
    assert not TensorFilter.of(include=["*Q_PROJ*"]).keeps_name("a.q_proj.weight")  # case-sensitive
    layers = TensorFilter.of(layers="0,2")
    assert layers.keeps(["model.layers.2.mlp.up_proj.weight"], 2)
    assert not layers.keeps(["model.embed_tokens.weight"], None)  # outside any layer
    assert TensorFilter.of().key() is None
    assert TensorFilter.of(include=["b", "a"]).key() == TensorFilter.of(include=["a", "b"]).key()
    with pytest.raises(ModelDeltaError, match="empty glob"):
        TensorFilter.of(include=[""])


def test_filtered_alignment_and_report(dirs: dict[str, Path]) -> None:
    pair = resolve_pair(str(dirs["base"]), str(dirs["tuned"]),
                        selection=TensorFilter.of(include=["*.self_attn.*"], layers="0-1"))
    al = align(pair.a, pair.b, selection=pair.selection)
    assert sorted(p.name for p in al.pairs) == sorted(
        f"model.layers.{i}.self_attn.{p}.weight" for i in (0, 1) for p in ("q_proj", "o_proj"))
    assert al.n_filtered == len(_tensors(0)) - 4 and not al.skipped
    report = compare(pair, EngineOptions())
    assert report.n_tensors == 4 and report.filters is not None and report.filters.layers == "0-1"
    assert report.filters.n_filtered == al.n_filtered
    whole = resolve_pair(str(dirs["base"]), str(dirs["tuned"]))
    assert whole.report_id(EngineOptions()) != pair.report_id(EngineOptions())  # filters are in the key
    unfiltered = compare(whole, EngineOptions())
    assert unfiltered.filters is None
    by_name = {m.name: m for m in unfiltered.modules}
    for m in report.modules:  # a filtered tensor's numbers are the unfiltered run's
        assert m.frob_norm == by_name[m.name].frob_norm and m.cosine_sim == by_name[m.name].cosine_sim
    with pytest.raises(AlignmentError, match="selects no float tensor"):
        align(pair.a, pair.b, selection=TensorFilter.of(include=["nothing*"]))


def test_base_inferred_from_a_local_card_and_adapter_config(dirs: dict[str, Path], tmp_path: Path) -> None:
    inferred = infer_base(str(dirs["tuned"]))
    assert inferred.model_a == str(dirs["base"]) and inferred.source == "card"
    assert "README.md" in inferred.detail
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x/y"}))
    got = infer_base(str(adapter))
    assert got.model_a == "x/y" and got.source == "adapter_config"
    (adapter / "README.md").write_text("---\nbase_model:\n- x/y\n- x/z\n---\n")
    with pytest.raises(ModelDeltaError, match=r"several \(x/y, x/z\)"):
        infer_base(str(adapter))
    with pytest.raises(ModelDeltaError, match="no base_model in its model card"):
        infer_base(str(dirs["base"]))


def _claim(report) -> dict:
    from modeldelta_mcp.diagnosis.codes import unregistered

    finding = next(f for f in report.diagnostics.findings if f.code == "base_claim")
    assert unregistered(finding.code, finding.category, list(finding.evidence)) is None
    return finding.evidence


def test_claim_verdicts(dirs: dict[str, Path]) -> None:
    true = compare(resolve_pair(None, str(dirs["tuned"])), EngineOptions())
    assert true.base_inferred is not None and _claim(true)["verdict"] == "consistent"
    assert _claim(true)["claimed_relation"] == "finetune" and _claim(true)["relation_stated"] is False
    false = compare(resolve_pair(str(dirs["base"]), str(dirs["other"])), EngineOptions())
    assert _claim(false)["verdict"] == "contradicted" and false.diagnostics.method == "unrelated_models"
    elsewhere = compare(resolve_pair(str(dirs["other"]), str(dirs["tuned"])), EngineOptions())
    assert _claim(elsewhere)["verdict"] == "cannot_tell"  # compared against another model
    vectors = compare(resolve_pair(str(dirs["base"]), str(dirs["other"]),
                                   selection=TensorFilter.of(include=["*norm*"])), EngineOptions())
    assert _claim(vectors)["verdict"] == "cannot_tell"  # no matrix compared
    no_claim = compare(resolve_pair(str(dirs["tuned"]), str(dirs["base"])), EngineOptions())
    assert not any(f.code == "base_claim" for f in no_claim.diagnostics.findings)
    assert claim_of(resolve_pair(str(dirs["tuned"]), str(dirs["base"])).b) is None


def test_streaming_when_the_disk_is_short_of_the_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldelta_mcp.sources import hub_checkpoint
    from modeldelta_mcp.sources.hub import HubInfo

    info = HubInfo(repo="org/x", sha="0" * 40, card=None,
                   files={"model-1.safetensors": 600, "model-2.safetensors": 400, "config.json": 10**9})
    assert info.weight_bytes(["*.safetensors"]) == 1000
    monkeypatch.setattr(hub_checkpoint, "_free_bytes", lambda path: 1050)  # under the 10% headroom
    assert hub_checkpoint.short_of_disk(info)
    monkeypatch.setattr(hub_checkpoint, "_free_bytes", lambda path: 1200)
    assert not hub_checkpoint.short_of_disk(info)
