"""GGUF files (llama.cpp) through the `gguf` package: its reader for the header, its dequantizers for data.

A bare .gguf path is a whole checkpoint: the architecture, layer count and head counts come from its
metadata (a config is synthesized from them), every tensor is presented under its Hugging Face name
(gguf_names.py) with the GGUF name as `stored_name`, and the converter's value changes are undone on
read (Q/K row permutation of Llama/Mistral, the +1 of Gemma's norms). GGUF quantizes each row on its
own (blocks run along the row), so the reader dequantizes only the rows asked for: memory follows the
engine's chunk, not the tensor; columns come from one whole tensor held at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorReader, TensorRef
from modeldelta_mcp.sources.quantized.base import DEQUANT_DTYPE, QuantScheme
from modeldelta_mcp.sources.quantized.gguf_names import (
    ARCHITECTURES,
    DERIVED,
    HF_ARCHITECTURE,
    hf_name,
    is_norm,
    qk_heads,
    unpermute_rows,
)

# Types stored as plain floats (not quantized) and the torch dtype they are read in.
PLAIN_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
# (bits, entries sharing one scale, number format) of the quantized types: llama.cpp's block layouts
# (ggml-common.h). K-quants group 256 entries in a super-block of 16 or 32-entry sub-blocks, each with
# its own scale (and, for the "scale and min" types, its own offset).
GGUF_TYPES: dict[str, tuple[int, int, str | None]] = {
    "Q4_0": (4, 32, "int_symmetric"), "Q4_1": (4, 32, "int_asymmetric"),
    "Q5_0": (5, 32, "int_symmetric"), "Q5_1": (5, 32, "int_asymmetric"),
    "Q8_0": (8, 32, "int_symmetric"),
    "Q2_K": (2, 16, "int_asymmetric"), "Q3_K": (3, 16, "int_symmetric"), "Q4_K": (4, 32, "int_asymmetric"),
    "Q5_K": (5, 32, "int_asymmetric"), "Q6_K": (6, 16, "int_symmetric"),
    "IQ4_NL": (4, 32, None), "IQ4_XS": (4, 32, None), "IQ3_S": (3, 32, None), "IQ3_XXS": (3, 32, None),
    "IQ2_S": (2, 32, None), "IQ2_XS": (2, 32, None), "IQ2_XXS": (2, 32, None), "IQ1_S": (1, 32, None),
    "IQ1_M": (1, 32, None), "TQ1_0": (2, 256, None), "TQ2_0": (2, 256, None), "MXFP4": (4, 32, "fp4"),
}


def gguf_scheme(type_name: str) -> QuantScheme:
    bits, group, number = GGUF_TYPES[type_name]
    return QuantScheme(format="gguf", declared=type_name, number_format=number, bits=bits, group_size=group,
                       granularity="per_group")


@dataclass(frozen=True)
class GGUFTensor:
    ref: TensorRef
    qtype: Any  # gguf.GGMLQuantizationType
    offset: int  # byte offset of the data in the file
    n_bytes: int
    np_shape: tuple[int, ...]  # the data's numpy shape as stored (rows first; bytes per row when quantized)
    row_map: tuple[int, ...] | None = None  # HF row -> stored row (Llama/Mistral Q and K)
    minus_one: bool = False  # Gemma norms stored as 1 + w


@dataclass
class GGUFIndex:
    path: Path
    arch: str
    tensors: dict[str, GGUFTensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    format: str = "gguf"

    def schemes(self) -> dict[str, tuple[QuantScheme, list[TensorRef]]]:
        out: dict[str, tuple[QuantScheme, list[TensorRef]]] = {}
        for t in self.tensors.values():
            name = t.qtype.name
            if name in GGUF_TYPES:
                scheme = gguf_scheme(name)
                out.setdefault(scheme.label, (scheme, []))[1].append(t.ref)
        return out


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # a malformed field reads as absent
        return None


def _check_type(path: Path, name: str, qtype: Any) -> None:
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    if qtype.name in PLAIN_TYPES:
        return
    if qtype.name not in GGUF_TYPES:
        raise SourceError(f"{path}: tensor {name} has GGUF type {qtype.name}, which is not supported")
    _, size = GGML_QUANT_SIZES[qtype]
    try:
        dequantize(np.zeros((1, size), dtype=np.uint8), qtype)
    except NotImplementedError as exc:
        raise SourceError(f"{path}: tensor {name} has GGUF type {qtype.name}, which the gguf package cannot "
                          "dequantize") from exc


def load_gguf_index(path: Path) -> GGUFIndex:
    """Header of a .gguf file (no tensor data read) -> Hugging Face-named index and a synthesized config."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path), "r")
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: file not found") from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"{path}: not a readable GGUF file ({first})") from exc
    arch = str(_field(reader, "general.architecture") or "")
    names = ARCHITECTURES.get(arch)
    n_head = int(_field(reader, f"{arch}.attention.head_count") or 0)
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    index = GGUFIndex(path=path, arch=arch)
    checked: set[str] = set()
    for t in reader.tensors:
        if t.name in DERIVED:
            continue
        if t.tensor_type.name not in checked:
            _check_type(path, t.name, t.tensor_type)
            checked.add(t.tensor_type.name)
        mapped = hf_name(names, t.name) if names else None
        name = mapped or t.name
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        qname = t.tensor_type.name
        dtype = PLAIN_TYPES.get(qname, DEQUANT_DTYPE)
        quant = gguf_scheme(qname).label if qname in GGUF_TYPES else None
        row_map = None
        kind = qk_heads(t.name)
        if names is not None and names.permute_qk and kind is not None and len(shape) == 2:
            heads = n_head if kind == "q" else n_kv
            try:
                row_map = tuple(unpermute_rows(shape[0], heads))
            except ValueError as exc:
                raise SourceError(f"{path}: tensor {t.name}: {exc} (head counts from the GGUF metadata)") from exc
        minus_one = bool(names is not None and names.norm_plus_one and is_norm(t.name))
        ref = TensorRef(name, shape, dtype, path.name, stored_name=t.name, quant=quant)
        index.tensors[name] = GGUFTensor(ref, t.tensor_type, int(t.data_offset), int(t.n_bytes),
                                         tuple(int(s) for s in t.data.shape), row_map, minus_one)
    if not index.tensors:
        raise SourceError(f"{path}: the GGUF file holds no tensors")
    index.config = _config(reader, arch, index)
    return index


def _config(reader: Any, arch: str, index: GGUFIndex) -> dict[str, Any]:
    """The config.json facts a GGUF header carries (architecture, sizes), for alignment and model_info."""
    cfg: dict[str, Any] = {"model_type": arch}
    if arch in HF_ARCHITECTURE:
        cfg["architectures"] = [HF_ARCHITECTURE[arch]]
    keys = {"hidden_size": "embedding_length", "num_hidden_layers": "block_count",
            "num_attention_heads": "attention.head_count", "num_key_value_heads": "attention.head_count_kv",
            "intermediate_size": "feed_forward_length"}
    for key, gkey in keys.items():
        v = _field(reader, f"{arch}.{gkey}")
        if isinstance(v, (int, float)):
            cfg[key] = int(v)
    embed = index.tensors.get("model.embed_tokens.weight")
    if embed is not None:
        cfg["vocab_size"] = embed.ref.shape[0]
    cfg["tie_word_embeddings"] = "lm_head.weight" not in index.tensors
    return cfg


class GGUFTensorReader(TensorReader):
    """Dequantizes the rows asked for, through the gguf package; one whole tensor is kept for columns."""

    releases_pages = False

    def __init__(self, index: GGUFIndex) -> None:
        self._index = index
        self._map: np.memmap | None = None
        self._mapped_for: str | None = None
        self._whole: tuple[str, torch.Tensor] | None = None

    def _data(self, t: GGUFTensor) -> np.ndarray:
        # A fresh map per tensor: the pages of the previous tensor stop counting toward resident memory.
        if self._map is None or self._mapped_for != t.ref.name:
            self._map = None
            try:
                self._map = np.memmap(self._index.path, dtype=np.uint8, mode="r")
            except OSError as exc:
                raise SourceError(f"{self._index.path}: cannot open ({exc})") from exc
            self._mapped_for = t.ref.name
        raw = self._map[t.offset : t.offset + t.n_bytes]
        if raw.size != t.n_bytes:
            raise SourceError(f"{self._index.path}: tensor {t.ref.stored_name} runs past the end of the file")
        name = t.qtype.name
        if name in ("F32", "F16", "F64"):
            return raw.view({"F32": np.float32, "F16": np.float16, "F64": np.float64}[name]).reshape(t.np_shape)
        return raw.reshape(t.np_shape)

    def _rows(self, t: GGUFTensor, start: int, stop: int) -> torch.Tensor:
        data = self._data(t)
        data2 = data.reshape(-1, data.shape[-1]) if data.ndim != 2 else data
        sel = data2[list(t.row_map[start:stop])] if t.row_map is not None else np.array(data2[start:stop])
        name = t.qtype.name
        if name in ("F32", "F16", "F64"):
            out = torch.from_numpy(np.ascontiguousarray(sel))
        elif name == "BF16":
            out = torch.from_numpy(np.ascontiguousarray(sel).view(np.int16)).view(torch.bfloat16)
        else:
            from gguf.quants import dequantize

            try:
                out = torch.from_numpy(np.ascontiguousarray(dequantize(sel, t.qtype)))
            except Exception as exc:
                raise SourceError(f"{self._index.path}: tensor {t.ref.stored_name} cannot be dequantized as "
                                  f"{name} ({type(exc).__name__}: {exc})") from exc
        if t.minus_one:
            out = out - 1
        return out

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        t = self._index.tensors[name]
        if len(t.ref.shape) <= 1:
            return self.full(name).reshape(-1, 1)[start:stop]
        out = self._rows(t, start, stop)
        return out.reshape(out.shape[0], -1)

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        if self._whole is None or self._whole[0] != name:
            self._whole = None
            self._whole = (name, self.full(name))
        return self._whole[1][:, start:stop]

    def full(self, name: str) -> torch.Tensor:
        t = self._index.tensors[name]
        if len(t.ref.shape) <= 1:
            rows = self._rows(t, 0, 1) if t.row_map is None else self._rows(t, 0, t.ref.shape[0])
            return rows.reshape(t.ref.shape)
        return self._rows(t, 0, t.ref.shape[0]).reshape(t.ref.shape)

    def close(self) -> None:
        self._map = None
        self._mapped_for = None
        self._whole = None
