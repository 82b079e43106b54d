"""spec -> Checkpoint: a local dir, a single weights file, a PEFT adapter dir or a hub id."""

from __future__ import annotations

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import hub
from modeldelta_mcp.sources.checkpoint import Checkpoint
from modeldelta_mcp.sources.formats import detect
from modeldelta_mcp.sources.spec import ModelSpec


def resolve(spec: ModelSpec | str, token: str | None = None, quiet: bool = True,
            base: Checkpoint | None = None) -> Checkpoint:
    """Resolve a model spec. `base` is the other side, needed to expand a PEFT adapter."""
    model = ModelSpec.of(spec)
    if model.kind == "hub":
        root, sha = hub.download(model, token=token, quiet=quiet)
        fmt, root, files = detect(root)
        return fmt.load(model.raw, root, files, "hub", revision=sha, base=base)
    path = model.local_path()
    if not path.exists():
        raise SourceError(f"{model.raw}: no such file or directory, and not a hub repo id (org/name[@revision])")
    fmt, root, files = detect(path)
    return fmt.load(model.raw, root, files, "local", base=base)
