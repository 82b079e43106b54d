"""On-disk weight formats: one object per format, chosen for a directory or a file by `detect`.

A format says which files of a directory it reads (`claim`), indexes them from headers alone (`index`)
and opens a TensorReader over a resolved checkpoint (`open`). The engine only sees TensorReaders; a new
format (a dequantizing reader, GGUF, a remote reader) is one WeightFormat subclass placed in FORMATS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import Checkpoint, Source, TensorReader, TensorRef
from modeldelta_mcp.sources.guard import shard_names
from modeldelta_mcp.sources.jsonfile import read_json_object

ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG = "config.json"


class WeightFormat(ABC):
    """One on-disk format. Instances are shared between checkpoints unless a format binds per-checkpoint
    state in `load` (the PEFT adapter binds its base)."""

    name: ClassVar[str]

    def claim(self, root: Path) -> list[str] | None:
        """The files this format would read in directory `root`, or None when the directory is not one."""
        return None

    def claims_file(self, path: Path) -> bool:
        """Whether a single weights file given by path is in this format."""
        return False

    @abstractmethod
    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        """Tensor name -> TensorRef for `files` (relative to root), from headers only."""

    @abstractmethod
    def open(self, ckpt: Checkpoint) -> TensorReader:
        """A reader over a checkpoint this format resolved."""

    def identity(self) -> object:
        """Extra identity material for the result store beyond the checkpoint's own files (JSON-able)."""
        return None

    def load(self, spec: str, root: Path, files: list[str], source: Source, revision: str | None = None,
             base: Checkpoint | None = None) -> Checkpoint:
        """The checkpoint of `files` under root, with root's config.json when there is one. `base` is the
        other side of the comparison; only formats that build on another checkpoint read it."""
        tensors = self.index(root, files)
        if not tensors:
            raise SourceError(f"{root / files[0] if len(files) == 1 else root}: the weight files hold no tensors")
        config_path = root / CONFIG
        config = read_json_object(config_path) if config_path.is_file() else None
        return Checkpoint(spec=spec, source=source, root=root, files=files, tensors=tensors, format=self,
                          revision=revision, config=config)


def sharded(root: Path, index_name: str) -> list[str]:
    """The shard files a `*.index.json` weight map names, all present."""
    weight_map = read_json_object(root / index_name).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SourceError(f"{root / index_name}: no weight_map")
    files = shard_names(root / index_name, weight_map)
    for rel in files:
        if not (root / rel).is_file():
            raise SourceError(f"{root / rel}: shard named in {index_name} is missing")
    return files


class Safetensors(WeightFormat):
    name = "safetensors"

    def claim(self, root: Path) -> list[str] | None:
        if (root / ST_INDEX).is_file():
            return sharded(root, ST_INDEX)
        st = sorted(p.name for p in root.glob("*.safetensors"))
        if "model.safetensors" in st:
            return ["model.safetensors"]
        return st or None

    def claims_file(self, path: Path) -> bool:
        return path.suffix == ".safetensors"

    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        from modeldelta_mcp.sources.safetensors_files import index_file

        return {ref.name: ref for rel in files for ref in index_file(root, rel)}

    def open(self, ckpt: Checkpoint) -> TensorReader:
        from modeldelta_mcp.sources.safetensors_files import SafetensorsReader

        return SafetensorsReader(ckpt.root, ckpt.tensors)


class TorchBin(WeightFormat):
    name = "torch"

    def claim(self, root: Path) -> list[str] | None:
        if (root / BIN_INDEX).is_file():
            return sharded(root, BIN_INDEX)
        return sorted(p.name for p in root.glob("pytorch_model*.bin")) or None

    def claims_file(self, path: Path) -> bool:
        return path.suffix in {".bin", ".pt", ".pth"}

    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        from modeldelta_mcp.sources.torch_files import index_file

        return {ref.name: ref for rel in files for ref in index_file(root, rel)}

    def open(self, ckpt: Checkpoint) -> TensorReader:
        from modeldelta_mcp.sources.torch_files import TorchBinReader

        return TorchBinReader(ckpt.root, ckpt.tensors)


SAFETENSORS = Safetensors()
TORCH_BIN = TorchBin()


def _formats() -> list[WeightFormat]:
    """Every format, most specific first: the first that claims a directory reads it. Register a new
    format here (quantized formats before the plain ones whose files they share)."""
    from modeldelta_mcp.sources.peft_adapter import PEFT_ADAPTER
    from modeldelta_mcp.sources.quantized.formats import GGUF, QUANTIZED

    return [PEFT_ADAPTER, QUANTIZED, SAFETENSORS, TORCH_BIN, GGUF]


def detect(path: Path) -> tuple[WeightFormat, Path, list[str]]:
    """The format of a local directory or weights file: (format, root directory, files relative to it)."""
    formats = _formats()
    if path.is_file():
        for fmt in formats:
            if fmt.claims_file(path):
                return fmt, path.parent, [path.name]
        raise SourceError(f"{path}: not a weights file (.safetensors, .bin or .gguf)")
    for fmt in formats:
        files = fmt.claim(path)
        if files:
            return fmt, path, files
    raise SourceError(
        f"{path}: no weights found (expected *.safetensors, {ST_INDEX}, pytorch_model.bin or {BIN_INDEX})"
    )
