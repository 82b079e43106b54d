"""A model spec as the user wrote it, parsed once: a local path (directory or weights file) or a hub repo id.

The MCP server's access check and the resolver both read this one decision, so the check refuses exactly
what the resolver would read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modeldelta_mcp.errors import SourceError

# org/name with an optional @revision; a revision may hold slashes (refs/pr/1).
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")
# A spec naming a weights file is a path even when it is missing (`org/model.gguf` is no repo id): the
# resolver then says "no such file" instead of asking the hub.
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def looks_like_repo_id(spec: str) -> bool:
    repo = spec.split("@", 1)[0]
    return bool(REPO_ID.match(spec)) and not spec.startswith((".", "/", "~")) and repo.count("/") <= 1


def split_spec(spec: str) -> tuple[str, str | None]:
    """org/name[@revision] -> (org/name, revision or None)."""
    repo, _, rev = spec.partition("@")
    return repo, (rev or None)


@dataclass(frozen=True)
class ModelSpec:
    raw: str  # as given; reports name the model by it
    kind: Literal["local", "hub"]
    path: Path | None = None  # kind local: the path with ~ expanded (it may not exist; resolve says so)
    repo_id: str | None = None  # kind hub: org/name
    revision: str | None = None  # kind hub: branch, tag or commit as asked for

    @classmethod
    def parse(cls, raw: str) -> ModelSpec:
        """A path unless it reads as a hub repo id (org/name[@rev]) that is not an existing local path."""
        if not raw or not raw.strip():
            raise SourceError("model spec is empty")
        path = Path(raw).expanduser()
        # An existing path wins, relative to the working directory: `org/name` may be a local folder.
        repo, revision = split_spec(raw)
        if (not path.exists() and looks_like_repo_id(raw) and "/" in repo
                and not repo.lower().endswith(WEIGHT_FILE_SUFFIXES)):
            return cls(raw=raw, kind="hub", repo_id=repo, revision=revision)
        return cls(raw=raw, kind="local", path=path)

    @classmethod
    def of(cls, spec: ModelSpec | str) -> ModelSpec:
        return spec if isinstance(spec, ModelSpec) else cls.parse(spec)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def local_path(self) -> Path:
        """The local path of a local spec (a hub spec has none)."""
        if self.path is None:
            raise SourceError(f"{self.raw}: a hub repo id, not a local path")
        return self.path
