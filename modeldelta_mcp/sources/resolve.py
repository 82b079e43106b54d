"""spec -> Checkpoint: a local dir, a single weights file, a PEFT adapter dir or a hub id."""

from __future__ import annotations

from pathlib import Path

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import hub
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorRef
from modeldelta_mcp.sources.jsonfile import read_json_object

ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


def _sharded(root: Path, index_name: str) -> list[str]:
    weight_map = read_json_object(root / index_name).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SourceError(f"{root / index_name}: no weight_map")
    files = sorted(set(weight_map.values()))
    for rel in files:
        if not (root / rel).is_file():
            raise SourceError(f"{root / rel}: shard named in {index_name} is missing")
    return files


def _weight_files(root: Path) -> tuple[list[str], str]:
    """The weight files of a directory, preferring safetensors, and their format."""
    if (root / ST_INDEX).is_file():
        return _sharded(root, ST_INDEX), "safetensors"
    st = sorted(p.name for p in root.glob("*.safetensors"))
    if "model.safetensors" in st:
        return ["model.safetensors"], "safetensors"
    if st:
        return st, "safetensors"
    if (root / BIN_INDEX).is_file():
        return _sharded(root, BIN_INDEX), "torch"
    bins = sorted(p.name for p in root.glob("pytorch_model*.bin"))
    if bins:
        return bins, "torch"
    raise SourceError(
        f"{root}: no weights found (expected *.safetensors, {ST_INDEX}, pytorch_model.bin or {BIN_INDEX})"
    )


def _index(root: Path, files: list[str], fmt: str) -> dict[str, TensorRef]:
    if fmt == "torch":
        from modeldelta_mcp.sources.torch_files import index_file
    else:
        from modeldelta_mcp.sources.safetensors_files import index_file
    tensors: dict[str, TensorRef] = {}
    for rel in files:
        for ref in index_file(root, rel):
            tensors[ref.name] = ref
    return tensors


def load_dir(spec: str, root: Path, source: str, revision: str | None = None) -> Checkpoint:
    files, fmt = _weight_files(root)
    tensors = _index(root, files, fmt)
    if not tensors:
        raise SourceError(f"{root}: the weight files hold no tensors")
    config_path = root / "config.json"
    config = read_json_object(config_path) if config_path.is_file() else None
    return Checkpoint(spec=spec, source=source, root=root, files=files, tensors=tensors,
                      revision=revision, config=config, fmt=fmt)


def resolve(spec: str, token: str | None = None, quiet: bool = True, base: Checkpoint | None = None) -> Checkpoint:
    """Resolve a model spec. `base` is the other side, needed to expand a PEFT adapter."""
    if not spec or not spec.strip():
        raise SourceError("model spec is empty")
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix == ".safetensors":
                fmt = "safetensors"
            elif path.suffix in {".bin", ".pt", ".pth"}:
                fmt = "torch"
            else:
                raise SourceError(f"{path}: not a weights file (.safetensors or .bin)")
            tensors = _index(path.parent, [path.name], fmt)
            if not tensors:
                raise SourceError(f"{path}: the file holds no tensors")
            config_path = path.parent / "config.json"
            config = read_json_object(config_path) if config_path.is_file() else None
            return Checkpoint(spec=spec, source="local", root=path.parent, files=[path.name],
                              tensors=tensors, config=config, fmt=fmt)
        if (path / "adapter_config.json").is_file():
            from modeldelta_mcp.sources.peft_adapter import load_adapter

            return load_adapter(spec, path, base=base, source="adapter")
        return load_dir(spec, path, "local")
    if hub.looks_like_repo_id(spec) and "/" in spec.split("@")[0]:
        root, sha = hub.download(spec, token=token, quiet=quiet)
        if (root / "adapter_config.json").is_file():
            from modeldelta_mcp.sources.peft_adapter import load_adapter

            return load_adapter(spec, root, base=base, source="adapter", revision=sha)
        return load_dir(spec, root, "hub", revision=sha)
    raise SourceError(f"{spec}: no such file or directory, and not a hub repo id (org/name[@revision])")
