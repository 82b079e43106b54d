"""Every reader format gives the same tensor index and data; a pickle with code in it is refused, never run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from _core_ckpt import TINY_CONFIG, run_compare, save_checkpoint

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import resolve


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(50, 16, generator=gen),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(16, 16, generator=gen).to(torch.bfloat16),
        "model.layers.0.self_attn.o_proj.weight": torch.randn(16, 16, generator=gen).half(),
        "model.layers.0.mlp.up_proj.weight": torch.randn(40, 16, generator=gen),
        "model.layers.0.mlp.down_proj.weight": torch.randn(16, 40, generator=gen),
        "model.layers.0.input_layernorm.weight": torch.ones(16),
        "model.norm.weight": torch.ones(16),
        "lm_head.weight": torch.randn(50, 16, generator=gen),
        "model.rotary.inv_freq": torch.rand(8, generator=gen).double(),
        "model.position_ids": torch.arange(32).reshape(1, 32),
    }


LAYOUTS = {
    "safetensors": dict(fmt="safetensors", shards=1),
    "safetensors_sharded": dict(fmt="safetensors", shards=3),
    "bin": dict(fmt="bin", shards=1),
    "bin_sharded": dict(fmt="bin", shards=3),
}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    state = tiny_state()
    out = {name: save_checkpoint(root / name, state, config=TINY_CONFIG, **kw) for name, kw in LAYOUTS.items()}
    # the legacy (pre-zip) torch.save format cannot be mmapped: read by a plain weights-only load
    legacy = root / "bin_legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(TINY_CONFIG))
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    out["bin_legacy"] = legacy
    # a single file given as the spec, under a name that is not model.safetensors
    single = root / "single"
    save_checkpoint(single, state)
    (single / "model.safetensors").rename(single / "weights-v2.safetensors")
    out["single_file"] = single / "weights-v2.safetensors"
    return out


@pytest.mark.parametrize("layout", [*LAYOUTS, "bin_legacy", "single_file"])
def test_reader_indexes_and_reads_every_tensor(layouts: dict[str, Path], layout: str) -> None:
    state = tiny_state()
    ckpt = resolve(str(layouts[layout]))
    assert set(ckpt.tensors) == set(state)
    expected_files = {"safetensors_sharded": 3, "bin_sharded": 3}.get(layout, 1)
    assert len(ckpt.files) == expected_files
    assert ckpt.fmt == ("torch" if layout.startswith("bin") else "safetensors")
    if layout != "single_file":
        assert ckpt.architecture == "LlamaForCausalLM"
    reader = ckpt.open()
    try:
        for name, t in state.items():
            ref = ckpt.tensors[name]
            assert ref.shape == tuple(t.shape) and ref.dtype == str(t.dtype).removeprefix("torch."), name
            assert torch.equal(reader.full(name), t), name
            view = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)
            start = min(1, view.shape[0] - 1)
            assert torch.equal(reader.rows(name, start, start + 2), view[start:start + 2]), name
            if t.dim() == 2:
                assert torch.equal(reader.cols(name, 2, 5), t[:, 2:5]), name
    finally:
        reader.close()


@pytest.mark.parametrize("layout", [*LAYOUTS, "bin_legacy", "single_file"])
def test_every_layout_compares_identical_to_the_plain_file(layouts: dict[str, Path], layout: str) -> None:
    report = run_compare(layouts["safetensors"], layouts[layout])
    assert report.diagnostics.method == "identical"
    assert all(m.identical for m in report.modules)
    # int64 position ids are skipped with a reason; the float64 buffer is compared
    assert [s.name for s in report.skipped] == ["model.position_ids"]
    assert "non-float" in report.skipped[0].reason
    assert {m.name for m in report.modules} == set(tiny_state()) - {"model.position_ids"}


def test_safetensors_are_preferred_over_bin_in_one_directory(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tiny_state(0), fmt="bin")
    save_checkpoint(tmp_path, tiny_state(1), fmt="safetensors")
    ckpt = resolve(str(tmp_path))
    assert ckpt.fmt == "safetensors" and ckpt.files == ["model.safetensors"]


def test_sharded_index_naming_a_missing_shard_is_an_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tiny_state(), shards=3)
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(SourceError, match=r"model-00002-of-00003\.safetensors.*missing"):
        resolve(str(tmp_path))


class _RunsCode:
    """Unpickling this calls exec(): a checkpoint that is not plain weights."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("writer", ["torch_zip", "torch_legacy", "raw_pickle"])
def test_pickle_with_code_is_refused_and_never_executed(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "executed.txt"
    ckpt_dir = tmp_path / "evil"
    ckpt_dir.mkdir()
    path = ckpt_dir / "pytorch_model.bin"
    payload = {"model.embed_tokens.weight": torch.ones(4, 4), "x": _RunsCode(marker)}
    if writer == "torch_zip":
        torch.save(payload, path)
    elif writer == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(SourceError) as info:
        resolve(str(ckpt_dir))
    message = str(info.value)
    assert str(path) in message and "refused" in message and "\n" not in message
    assert not marker.exists(), "the pickle's code ran"


def test_pickle_of_plain_python_values_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"step": 3, "lr": 0.1}, tmp_path / "pytorch_model.bin")
    with pytest.raises(SourceError, match="not a state dict of tensors"):
        resolve(str(tmp_path))
