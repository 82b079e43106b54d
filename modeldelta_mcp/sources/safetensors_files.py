"""safetensors: header index and a row/column reader, through the safetensors library."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorReader, TensorRef, dtype_size
from modeldelta_mcp.sources.guard import check_claimed_bytes, file_error, shown

# safetensors dtype codes -> torch dtype names
_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
}


def index_file(root: Path, rel: str) -> list[TensorRef]:
    """Read one file's header (no tensor data) into TensorRefs."""
    path = root / rel
    try:
        with safe_open(str(path), framework="pt") as f:
            refs = []
            for name in f.keys():
                sl = f.get_slice(name)
                dtype = _ST_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower())
                refs.append(TensorRef(name, tuple(int(s) for s in sl.get_shape()), dtype, rel))
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: file not found") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise file_error(path, "not a readable safetensors file", exc) from exc
    for ref in refs:
        if not isinstance(getattr(torch, ref.dtype, None), torch.dtype):
            raise SourceError(f"{path}: tensor {shown(ref.name)} has dtype {shown(ref.dtype, 20)}, "
                              "which torch cannot read")
    check_claimed_bytes(path, ((r.name, r.numel * dtype_size(r.dtype)) for r in refs))
    return refs


class SafetensorsReader(TensorReader):
    """Keeps one handle per shard open for a pass; slices are copied out of the mmap."""

    releases_pages = True

    def __init__(self, root: Path, refs: dict[str, TensorRef]) -> None:
        self._root = root
        self._refs = refs
        self._handles: dict[str, object] = {}

    def _slice(self, name: str):
        rel = self._refs[name].file
        handle = self._handles.get(rel)
        if handle is None:
            try:
                handle = safe_open(str(self._root / rel), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise file_error(self._root / rel, "cannot open", exc) from exc
            self._handles[rel] = handle
        return handle.get_slice(name)  # type: ignore[attr-defined]

    def _guard(self, name: str, fn):
        try:
            return fn()
        except SourceError:
            raise
        except Exception as exc:  # safetensors raises plain errors on a short read
            path = self._root / self._refs[name].file
            raise file_error(path, f"tensor {shown(name)} unreadable", exc) from exc

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        ref = self._refs[name]
        if len(ref.shape) <= 1:
            t = self._guard(name, lambda: self._slice(name)[start:stop] if ref.shape else self.full(name))
            return t.reshape(-1, 1) if ref.shape else t.reshape(1, 1)
        t = self._guard(name, lambda: self._slice(name)[start:stop])
        return t.reshape(t.shape[0], math.prod(ref.shape[1:]))

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._guard(name, lambda: self._slice(name)[:, start:stop])

    def tile(self, name: str, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        """Rows × columns of a 2-D tensor. The engine reads column blocks tile by tile: a whole-height
        column slice faults in one page per row, and the kernel's fault-around maps the neighbouring
        pages too, so it would make the whole tensor resident."""
        return self._guard(name, lambda: self._slice(name)[rows[0]:rows[1], cols[0]:cols[1]])

    def full(self, name: str) -> torch.Tensor:
        return self._guard(name, lambda: self._slice(name)[:])

    def close(self) -> None:
        self._handles.clear()
