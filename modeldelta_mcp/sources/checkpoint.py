"""A resolved checkpoint: a tensor index (name -> file, dtype, shape) and a reader over it."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from modeldelta_mcp.facts import AdapterFacts
from modeldelta_mcp.sources.spec import split_spec

if TYPE_CHECKING:
    from modeldelta_mcp.sources.formats import WeightFormat

Source = Literal["local", "hub", "adapter"]

# torch dtypes counted as weights; everything else (int64 position ids, bool masks) is skipped.
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}


@dataclass(frozen=True)
class TensorRef:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix
    file: str  # path relative to the checkpoint root
    # The file's own tensor name where the format stores it under another one (GGUF, packed GPTQ/AWQ...);
    # `name` is then the mapped Hugging Face name.
    stored_name: str | None = None
    # Label of the quantization scheme the file declares for this tensor (QuantScheme.label), None when the
    # tensor is stored as plain floats; the reader then yields it dequantized.
    quant: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_size(self.dtype)


def dtype_size(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


class TensorReader(ABC):
    """Reads tensors or row ranges of a checkpoint in the stored dtype; opened and closed around one pass.

    Every format's reader is one of these (safetensors, torch .bin, PEFT adapters, dequantizing readers of
    quantized formats): the engine never asks which format it holds.
    """

    # True for readers over an mmap: the engine closes them after every block, so the file pages a block
    # touched are unmapped and stop counting toward resident memory.
    releases_pages: ClassVar[bool] = False

    @abstractmethod
    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the tensor's 2-D view (shape[0], -1); a 1-D tensor reads as a column."""

    @abstractmethod
    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Columns [start, stop) of a 2-D tensor."""

    def tile(self, name: str, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        """Rows × columns of a 2-D tensor. Readers over an mmap override it to touch only the tile's pages."""
        return self.rows(name, rows[0], rows[1])[:, cols[0]:cols[1]]

    @abstractmethod
    def full(self, name: str) -> torch.Tensor:
        """The whole tensor in its stored shape."""

    def close(self) -> None:  # noqa: B027 - most readers hold nothing to release
        """Release handles and cached data; the reader may be used again after (it reopens)."""


@dataclass
class Checkpoint:
    spec: str  # as the user gave it
    source: Source
    root: Path
    files: list[str]
    tensors: dict[str, TensorRef]
    format: WeightFormat  # reads the files (sources/formats.py)
    revision: str | None = None
    config: dict[str, Any] | None = None
    adapter: AdapterFacts | None = None  # B is a PEFT adapter: what the diagnosis reads about it
    card: dict[str, Any] | None = None  # hub model card metadata (base_model, base_model_relation...)

    @property
    def fmt(self) -> str:
        """The format's name, for display."""
        return self.format.name

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def architecture(self) -> str | None:
        if not self.config:
            return None
        from modeldelta_mcp.sources.guard import config_str

        archs = self.config.get("architectures")
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            return archs[0]
        return config_str(self.config, "model_type")

    def dtypes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors.values():
            out[t.dtype] = out.get(t.dtype, 0) + 1
        return dict(sorted(out.items()))

    def identity(self) -> str:
        """Stable identity for the result store: hub commit, or file names, sizes and mtimes.

        Never hashes tensor data: a multi-GB file must not be read on the request path.
        """
        if self.source == "hub" and self.revision:
            material: Any = ["hub", split_spec(self.spec)[0], self.revision]
        else:
            stats = []
            for rel in self.files:
                st = (self.root / rel).stat()
                stats.append([rel, st.st_size, st.st_mtime_ns])
            material = ["local", str(self.root.resolve()), stats, self.format.identity()]
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def open(self) -> TensorReader:
        return self.format.open(self)
