"""The quantized formats as WeightFormats: safetensors checkpoints that declare a scheme, and GGUF files.

The registered instances only detect; `load` returns a checkpoint whose format is an instance bound to
the checkpoint's dequantizing index (one class per declared format, so `Checkpoint.fmt` names it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import Checkpoint, Source, TensorReader, TensorRef
from modeldelta_mcp.sources.formats import CONFIG, SAFETENSORS, WeightFormat
from modeldelta_mcp.sources.jsonfile import read_json_object
from modeldelta_mcp.sources.quantized import SIDE_CONFIGS, declared_config, index_quantized
from modeldelta_mcp.sources.quantized.base import DequantReader, QuantIndex, QuantScheme
from modeldelta_mcp.sources.quantized.gguf import GGUFIndex, GGUFTensorReader, load_gguf_index

Schemes = dict[str, tuple[QuantScheme, list[TensorRef]]]


class DeclaresQuantization:
    """A bound format whose checkpoint declares quantization schemes (CheckpointInfo.quantization)."""

    def schemes(self) -> Schemes:
        raise NotImplementedError


def _config(root: Path) -> dict[str, Any] | None:
    return read_json_object(root / CONFIG) if (root / CONFIG).is_file() else None


def _declares(root: Path) -> bool:
    """config.json names a quantization_config, or AutoGPTQ's side file or a quanto map is there (a small
    JSON read)."""
    if any((root / side).is_file() for side in SIDE_CONFIGS):
        return True
    cfg = _config(root)
    return isinstance((cfg or {}).get("quantization_config"), dict)


class QuantizedSafetensors(WeightFormat, DeclaresQuantization):
    """Safetensors weights under a declared quantization scheme, read dequantized one weight at a time."""

    name = "quantized"

    def __init__(self, index: QuantIndex | None = None) -> None:
        self.quant = index

    def claim(self, root: Path) -> list[str] | None:
        files = SAFETENSORS.claim(root)
        return files if files and _declares(root) else None

    def claims_file(self, path: Path) -> bool:
        return path.suffix == ".safetensors" and _declares(path.parent)

    def _bound(self, where: Path) -> QuantIndex:
        if self.quant is None:
            raise SourceError(f"{where}: quantized checkpoint read before it was indexed")
        return self.quant

    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        return self._bound(root).refs()

    def open(self, ckpt: Checkpoint) -> TensorReader:
        return DequantReader(ckpt.root, self._bound(ckpt.root))

    def schemes(self) -> Schemes:
        return self.quant.schemes() if self.quant is not None else {}

    def load(self, spec: str, root: Path, files: list[str], source: Source, revision: str | None = None,
             base: Checkpoint | None = None) -> Checkpoint:
        config = _config(root)
        index = index_quantized(root, SAFETENSORS.index(root, files), declared_config(root, config) or {},
                                base.tensors if base is not None else None)
        bound = BOUND[index.format](index)
        tensors = bound.index(root, files)
        if not tensors:
            raise SourceError(f"{root}: the weight files hold no tensors")
        return Checkpoint(spec=spec, source=source, root=root, files=files, tensors=tensors, format=bound,
                          revision=revision, config=config)


# The files' quantization families (QuantIndex.format): each binds its own subclass, so that a resolved
# checkpoint's format names its family (Checkpoint.fmt).
FAMILIES = ("gptq", "awq", "bitsandbytes", "compressed-tensors", "fp8", "quanto")
BOUND: dict[str, type[QuantizedSafetensors]] = {
    family: cast(type[QuantizedSafetensors], type(f"Quantized[{family}]", (QuantizedSafetensors,), {"name": family}))
    for family in FAMILIES}


def shapes_from_other_side(ckpt: Checkpoint) -> bool:
    """Whether a checkpoint holds weights whose shape its files do not store (quanto's grouped 2/4-bit weights
    without a bias): resolving it again with the other side of the comparison as `base` reads them."""
    return isinstance(ckpt.format, QuantizedSafetensors) and bool(ckpt.format.quant and ckpt.format.quant.unshaped)


class Gguf(WeightFormat, DeclaresQuantization):
    """A .gguf file: a whole checkpoint, its config synthesized from the header (sources/quantized/gguf.py)."""

    name = "gguf"

    def __init__(self, index: GGUFIndex | None = None) -> None:
        self.gguf = index

    def claims_file(self, path: Path) -> bool:
        return path.suffix == ".gguf"

    def _bound(self, where: Path) -> GGUFIndex:
        if self.gguf is None:
            raise SourceError(f"{where}: GGUF file read before it was indexed")
        return self.gguf

    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        return {n: t.ref for n, t in self._bound(root).tensors.items()}

    def open(self, ckpt: Checkpoint) -> TensorReader:
        return GGUFTensorReader(self._bound(ckpt.root))

    def schemes(self) -> Schemes:
        return self.gguf.schemes() if self.gguf is not None else {}

    def load(self, spec: str, root: Path, files: list[str], source: Source, revision: str | None = None,
             base: Checkpoint | None = None) -> Checkpoint:
        bound = Gguf(load_gguf_index(root / files[0]))
        return Checkpoint(spec=spec, source=source, root=root, files=files, tensors=bound.index(root, files),
                          format=bound, revision=revision, config=bound._bound(root).config)


QUANTIZED = QuantizedSafetensors()
GGUF = Gguf()
