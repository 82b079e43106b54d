"""ModelSpec: one parse decides hub id or path, for the access check and the resolver alike; formats by detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _core_ckpt import save_checkpoint

from modeldelta_mcp.access import PathNotAllowed, check_spec
from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import resolve
from modeldelta_mcp.sources.formats import SAFETENSORS, TORCH_BIN, WeightFormat, detect
from modeldelta_mcp.sources.peft_adapter import PEFT_ADAPTER
from modeldelta_mcp.sources.spec import ModelSpec


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"model.layers.0.mlp.up_proj.weight": torch.randn(8, 4, generator=g)}


@pytest.mark.parametrize(("raw", "kind", "repo", "rev"), [
    ("org/name", "hub", "org/name", None),
    ("org/name@refs/pr/1", "hub", "org/name", "refs/pr/1"),
    ("./org/name", "local", None, None),
    ("a/b/c", "local", None, None),
    ("just-a-name", "local", None, None),
    ("org/model.gguf", "local", None, None),  # a weights file, even when missing
])
def test_parse_decides_hub_or_path(raw: str, kind: str, repo: str | None, rev: str | None) -> None:
    spec = ModelSpec.parse(raw)
    assert (spec.raw, spec.kind, spec.repo_id, spec.revision) == (raw, kind, repo, rev)
    assert (spec.path is None) == (kind == "hub")


def test_home_is_expanded_and_an_empty_spec_is_refused() -> None:
    assert ModelSpec.parse("~/m").local_path() == Path.home() / "m"
    with pytest.raises(SourceError, match="empty"):
        ModelSpec.parse("  ")
    with pytest.raises(SourceError, match="not a local path"):
        ModelSpec.parse("org/name").local_path()


def test_check_and_resolve_read_the_same_local_folder_that_looks_like_a_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path / "org" / "name", _state())
    monkeypatch.chdir(tmp_path)
    spec = ModelSpec.parse("org/name")
    assert spec.kind == "local"
    check_spec(spec, [tmp_path.resolve()], "model")
    with pytest.raises(PathNotAllowed):
        check_spec(spec, [(tmp_path / "elsewhere").resolve()], "model")
    ckpt = resolve(spec)
    assert ckpt.source == "local" and ckpt.root == Path("org/name") and ckpt.spec == "org/name"


def test_detect_picks_one_format_per_directory_and_file(tmp_path: Path) -> None:
    st = save_checkpoint(tmp_path / "st", _state())
    pt = save_checkpoint(tmp_path / "pt", _state(), fmt="bin")
    assert detect(st)[0] is SAFETENSORS and detect(st)[2] == ["model.safetensors"]
    assert detect(pt)[0] is TORCH_BIN
    fmt, root, files = detect(st / "model.safetensors")
    assert fmt is SAFETENSORS and root == st and files == ["model.safetensors"]
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / "adapter_config.json").write_text("{}")
    assert detect(tmp_path / "ad")[0] is PEFT_ADAPTER
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no weights found"):
        detect(tmp_path / "empty")
    with pytest.raises(SourceError, match="not a weights file"):
        detect(tmp_path / "ad" / "adapter_config.json")


def test_every_format_reads_through_the_same_reader_interface(tmp_path: Path) -> None:
    for fmt in ("safetensors", "bin"):
        ckpt = resolve(str(save_checkpoint(tmp_path / fmt, _state(), fmt=fmt)))
        assert isinstance(ckpt.format, WeightFormat) and ckpt.fmt == ckpt.format.name
        reader = ckpt.open()
        try:
            name = "model.layers.0.mlp.up_proj.weight"
            assert torch.equal(reader.full(name), _state()[name])
        finally:
            reader.close()
