"""Allowed roots: local specs are read only inside them, symlinks included; hub ids are not paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modeldelta_mcp.access import (
    PathNotAllowed,
    check_files,
    check_spec,
    default_roots,
    hf_cache_dir,
    is_local_spec,
    roots_from_uris,
)


@pytest.mark.parametrize(("spec", "local"), [
    ("/abs/model", True), ("./model", True), ("../model", True), ("~/model", True),
    ("meta-llama/Llama-2-7b-hf", False), ("org/name@main", False), ("org/name@3f2a9c1", False),
    ("just-a-name", True), ("a/b/c", True),
])
def test_which_specs_are_local_paths(spec: str, local: bool) -> None:
    assert is_local_spec(spec) is local


def test_a_relative_dir_that_exists_is_local_even_if_it_reads_like_a_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert is_local_spec("org/name")


def test_paths_inside_pass_and_outside_fail_with_a_one_line_reason(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    (root / "m").mkdir(parents=True)
    other.mkdir()
    roots = [root.resolve()]
    check_spec(str(root / "m"), roots, "model_a")
    check_spec(str(root), roots, "model_a")
    check_spec("org/name", roots, "model_a")  # a hub id is not a path
    for bad in (str(other), str(root / ".." / "other"), "/etc/passwd", str(tmp_path / "rootx")):
        with pytest.raises(PathNotAllowed, match="outside the allowed roots") as err:
            check_spec(bad, roots, "model_b")
        assert "\n" not in str(err.value) and "model_b" in str(err.value)


def test_a_symlink_inside_a_root_cannot_lead_outside(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x")
    (root / "link").symlink_to(other, target_is_directory=True)
    (root / "real").mkdir()
    (root / "real" / "model.safetensors").symlink_to(other / "model.safetensors")
    roots = [root.resolve()]
    with pytest.raises(PathNotAllowed):
        check_spec(str(root / "link"), roots, "model")
    with pytest.raises(PathNotAllowed):  # a shard symlinked out of an allowed directory
        check_files(root / "real", ["model.safetensors"], roots, "model")


def test_default_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    hf = Path(os.path.realpath(hf_cache_dir()))
    assert default_roots([]) == [tmp_path.resolve(), hf]
    assert default_roots([tmp_path / "x"]) == [(tmp_path / "x").resolve(), hf]  # --allow-path replaces the cwd
    monkeypatch.chdir("/")
    assert default_roots([]) == [hf], "cwd '/' (how MCP hosts often start servers) must not allow everything"


def test_client_roots_are_file_uris(tmp_path: Path) -> None:
    uris = [tmp_path.as_uri(), "https://example.org/x", "file:///with%20space"]
    assert roots_from_uris(uris) == [tmp_path.resolve(), Path("/with space")]
