"""spec -> Checkpoint: a local dir, a single weights file, a PEFT adapter dir or a hub id."""

from __future__ import annotations

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import Checkpoint
from modeldelta_mcp.sources.formats import detect
from modeldelta_mcp.sources.spec import ModelSpec


def resolve(spec: ModelSpec | str, token: str | None = None, quiet: bool = True,
            base: Checkpoint | None = None, subset: bool = False, download: bool = False) -> Checkpoint:
    """Resolve a model spec. `base` is the other side, needed to expand a PEFT adapter. For a hub spec,
    `subset` (a filter leaves tensors out) and `download` pick how it is read (sources/hub_checkpoint.py)."""
    model = ModelSpec.of(spec)
    if model.kind == "hub":
        from modeldelta_mcp.sources.hub_checkpoint import hub_checkpoint

        return hub_checkpoint(model, token=token, quiet=quiet, base=base, subset=subset, download=download)
    path = model.local_path()
    if not path.exists():
        raise SourceError(f"{model.raw}: no such file or directory, and not a hub repo id (org/name[@revision])")
    fmt, root, files = detect(path)
    return fmt.load(model.raw, root, files, "local", base=base)
