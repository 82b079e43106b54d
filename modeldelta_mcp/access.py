"""Which local paths the MCP server may read: inside the allowed roots, nothing else.

Roots = `--allow-path` directories (or, without any, the working directory unless it is `/`), the
Hugging Face cache (where hub specs land), and the roots the MCP client declares. Paths are compared
after resolving symlinks, so a link inside a root cannot lead outside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.sources.spec import ModelSpec


class PathNotAllowed(ModelDeltaError):
    """A local path outside every allowed root."""


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def default_roots(allow_paths: Iterable[str | Path]) -> list[Path]:
    roots = [Path(p).expanduser() for p in allow_paths]
    if not roots:
        cwd = Path.cwd()
        # MCP hosts often start servers with cwd "/": that would allow every file, so it is never a default.
        if cwd != Path(cwd.anchor):
            roots.append(cwd)
    roots.append(hf_cache_dir())
    return [Path(os.path.realpath(r)) for r in roots]


def roots_from_uris(uris: Iterable[str]) -> list[Path]:
    """file:// URIs from the client's roots/list; other schemes cannot hold local files and are ignored."""
    out = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme == "file" and parsed.path:
            out.append(Path(os.path.realpath(unquote(parsed.path))))
    return out


def is_local_spec(spec: ModelSpec | str) -> bool:
    """A spec names a local path unless it reads as a hub repo id that is not a local path (ModelSpec.parse)."""
    return ModelSpec.of(spec).is_local


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_path(path: str | Path, roots: list[Path], what: str) -> None:
    real = Path(os.path.realpath(Path(path).expanduser()))
    if not _inside(real, roots):
        shown = ", ".join(str(r) for r in roots) or "none"
        raise PathNotAllowed(
            f"{what} {path}: outside the allowed roots ({shown}); start modeldelta-mcp with --allow-path DIR"
        )


def check_spec(spec: ModelSpec | str, roots: list[Path], what: str) -> None:
    """Refuse a local spec outside the roots before anything is read there. Pass the ModelSpec that
    `resolve` will read, so the two cannot disagree about what is a path."""
    model = ModelSpec.of(spec)
    if model.is_local:
        check_path(model.local_path(), roots, what)


def check_files(root: Path, files: Iterable[str], roots: list[Path], what: str) -> None:
    """The weight files a checkpoint resolved to must stay inside the roots too (symlinked shards)."""
    for rel in files:
        check_path(root / rel, roots, what)


class AllowedRoots:
    """The report service's access policy for one request: specs and resolved files inside `roots`."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots

    def check_spec(self, spec: ModelSpec, what: str) -> None:
        check_spec(spec, self.roots, what)

    def check_checkpoint(self, root: Path, files: Iterable[str], what: str) -> None:
        check_files(root, files, self.roots, what)
