"""GPTQ and AWQ packed-integer checkpoints (safetensors), as AutoGPTQ / gptqmodel and AutoAWQ write them.

Per linear module `P` the file holds `P.qweight`, `P.qzeros`, `P.scales` (and for GPTQ `P.g_idx`):

- GPTQ: qweight int32 [in·bits/32, out], the input axis packed LSB-first as one bit stream per column
  (3 bits cross word boundaries); qzeros int32 [groups, out·bits/32] packed the same way along the output
  axis; scales [groups, out]; g_idx int32 [in], the group of each input channel (act order / desc_act
  reorders it). The original "gptq" checkpoint format stores zero points minus one; "gptq_v2" stores them
  as they are. W[o, i] = scales[g[i], o] · (q[i, o] − z[g[i], o]).
- AWQ (GEMM layout): qweight int32 [in, out/8], qzeros int32 [groups, out/8], 4-bit values packed along
  the output axis in AutoAWQ's interleaved order (0, 2, 4, 6, 1, 3, 5, 7); scales [groups, out];
  groups are consecutive runs of group_size inputs. W[o, i] = scales[i//G, o] · (q[i, o] − z[i//G, o]).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorRef
from modeldelta_mcp.sources.quantized.base import (
    QuantEntry,
    QuantIndex,
    QuantScheme,
    corrupt,
    packed_len,
    quant_ref,
    unpack_bits,
)

GPTQ_BITS = (2, 3, 4, 8)
GPTQ_FORMATS = ("gptq", "gptq_v2")
AWQ_VERSIONS = ("gemm",)
# AutoAWQ packs the 8 nibbles of a word in this order of output columns; reading position k of a word
# gives column AWQ_ORDER[k], so column c sits at position AWQ_REVERSE[c].
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE = tuple(AWQ_ORDER.index(c) for c in range(8))
AWQ_BITS = 4


def _int(cfg: dict[str, Any], *keys: str, default: int | None = None) -> int | None:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return int(cfg[k])
    return default


def gptq_scheme(cfg: dict[str, Any], where: Path) -> tuple[QuantScheme, bool]:
    """The declared GPTQ scheme, and whether stored zero points are offset by one (v1 format)."""
    bits = _int(cfg, "bits", "w_bit")
    if bits not in GPTQ_BITS:
        raise SourceError(f"{where}: unsupported GPTQ bits {bits} (supported: {', '.join(map(str, GPTQ_BITS))})")
    fmt = str(cfg.get("checkpoint_format") or "gptq").lower()
    if fmt not in GPTQ_FORMATS:
        raise SourceError(f"{where}: unsupported GPTQ checkpoint_format {fmt!r} (supported: gptq, gptq_v2)")
    group = _int(cfg, "group_size", default=-1)
    sym = bool(cfg.get("sym", True))
    scheme = QuantScheme(format="gptq", declared="gptq" if fmt == "gptq" else fmt,
                         number_format="int_symmetric" if sym else "int_asymmetric", bits=bits,
                         group_size=group if group and group > 0 else None,
                         granularity="per_group" if group and group > 0 else "per_row",
                         act_order=bool(cfg.get("desc_act", False)))
    return scheme, fmt == "gptq"


def awq_scheme(cfg: dict[str, Any], where: Path) -> QuantScheme:
    bits = _int(cfg, "bits", "w_bit")
    version = str(cfg.get("version") or "gemm").lower()
    if version not in AWQ_VERSIONS:
        raise SourceError(f"{where}: unsupported AWQ version {version!r} (supported: gemm)")
    if bits != AWQ_BITS:
        raise SourceError(f"{where}: unsupported AWQ bits {bits} (the GEMM layout packs 4-bit values)")
    group = _int(cfg, "group_size", "q_group_size", default=-1)
    if not cfg.get("zero_point", True):
        raise SourceError(f"{where}: unsupported AWQ layout without zero points (the GEMM layout stores qzeros)")
    return QuantScheme(format="awq", declared="awq", number_format="int_asymmetric",
                       bits=bits, group_size=group if group and group > 0 else None,
                       granularity="per_group" if group and group > 0 else "per_row")


def _modules(stored: dict[str, TensorRef]) -> list[str]:
    return sorted(n[: -len(".qweight")] for n in stored if n.endswith(".qweight"))


def _need(stored: dict[str, TensorRef], root: Path, prefix: str, part: str) -> TensorRef:
    ref = stored.get(f"{prefix}.{part}")
    if ref is None:
        raise SourceError(f"{root}: packed module {prefix} has no {prefix}.{part}")
    return ref


def _packed_parts(stored: dict[str, TensorRef], root: Path, prefix: str,
                  ) -> tuple[TensorRef, TensorRef, TensorRef, Path]:
    """A packed module's qweight, qzeros and scales (GPTQ and AWQ name them alike), and the qweight's file."""
    qw = _need(stored, root, prefix, "qweight")
    qz = _need(stored, root, prefix, "qzeros")
    sc = _need(stored, root, prefix, "scales")
    path = root / qw.file
    if len(qw.shape) != 2 or len(sc.shape) != 2:
        raise corrupt(path, qw.name, f"qweight {list(qw.shape)} and scales {list(sc.shape)} must be 2-D")
    return qw, qz, sc, path


def _gptq_dequant(bits: int, n_in: int, n_out: int, v1: bool, group: int | None):
    def dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
        q = unpack_bits(p["qweight"], bits, n_in, dim=0)  # [in, out]
        z = unpack_bits(p["qzeros"], bits, n_out, dim=1)  # [groups, out]
        if v1:
            z = z + 1
        s = p["scales"].float()
        g = p["g_idx"].long() if "g_idx" in p else torch.arange(n_in) // (group or n_in)
        if int(g.min()) < 0 or int(g.max()) >= s.shape[0]:
            raise ValueError(f"g_idx names group {int(g.max())} of {s.shape[0]}")
        return (s[g] * (q - z[g]).float()).T

    return dequant


def index_gptq(stored: dict[str, TensorRef], root: Path, cfg: dict[str, Any]) -> QuantIndex:
    scheme, v1 = gptq_scheme(cfg, root)
    bits = scheme.bits or 0
    index = QuantIndex("gptq")
    used: set[str] = set()
    for prefix in _modules(stored):
        qw, qz, sc, path = _packed_parts(stored, root, prefix)
        gi = stored.get(f"{prefix}.g_idx")
        groups, n_out = sc.shape
        n_in = gi.shape[0] if gi is not None else qw.shape[0] * 32 // bits
        if qw.shape[0] != packed_len(n_in, bits) or qw.shape[1] != n_out:
            raise corrupt(path, qw.name, f"shape {list(qw.shape)}, {[packed_len(n_in, bits), n_out]} expected for "
                          f"{n_in} inputs × {n_out} outputs at {bits} bits")
        if list(qz.shape) != [groups, packed_len(n_out, bits)]:
            raise corrupt(path, qz.name, f"shape {list(qz.shape)}, {[groups, packed_len(n_out, bits)]} expected "
                          f"at {bits} bits")
        if gi is None and scheme.group_size and groups != math.ceil(n_in / scheme.group_size):
            raise corrupt(path, sc.name, f"{groups} groups for {n_in} inputs at group size {scheme.group_size}")
        parts = {"qweight": qw.name, "qzeros": qz.name, "scales": sc.name}
        if gi is not None:
            parts["g_idx"] = gi.name
        ref = quant_ref(f"{prefix}.weight", (n_out, n_in), qw.file, qw.name, scheme)
        index.entries[ref.name] = QuantEntry(ref, parts, scheme, _gptq_dequant(bits, n_in, n_out, v1,
                                                                              scheme.group_size))
        used.update(parts.values())
    _keep_rest(index, stored, used)
    return index


def _awq_dequant(n_in: int, n_out: int, group: int | None):
    reverse = torch.tensor(AWQ_REVERSE)

    def unpack(words: torch.Tensor, rows: int) -> torch.Tensor:
        vals = unpack_bits(words, AWQ_BITS, words.shape[1] * 8, dim=1)
        return vals.reshape(rows, -1, 8)[:, :, reverse].reshape(rows, -1)[:, :n_out]

    def dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
        q = unpack(p["qweight"], n_in)
        s = p["scales"].float()
        z = unpack(p["qzeros"], s.shape[0])
        g = torch.arange(n_in) // (group or n_in)
        return (s[g] * (q - z[g]).float()).T

    return dequant


def index_awq(stored: dict[str, TensorRef], root: Path, cfg: dict[str, Any]) -> QuantIndex:
    scheme = awq_scheme(cfg, root)
    index = QuantIndex("awq")
    used: set[str] = set()
    for prefix in _modules(stored):
        qw, qz, sc, path = _packed_parts(stored, root, prefix)
        groups, n_out = sc.shape
        n_in = qw.shape[0]
        if qw.shape[1] != packed_len(n_out, AWQ_BITS):
            raise corrupt(path, qw.name, f"shape {list(qw.shape)}, {[n_in, packed_len(n_out, AWQ_BITS)]} expected "
                          f"for {n_out} outputs at {AWQ_BITS} bits")
        if scheme.group_size and groups != math.ceil(n_in / scheme.group_size):
            raise corrupt(path, sc.name, f"{groups} groups for {n_in} inputs at group size {scheme.group_size}")
        if list(qz.shape) != [groups, packed_len(n_out, AWQ_BITS)]:
            raise corrupt(path, qz.name, f"shape {list(qz.shape)}, {[groups, packed_len(n_out, AWQ_BITS)]} "
                          f"expected at {AWQ_BITS} bits")
        parts = {"qweight": qw.name, "qzeros": qz.name, "scales": sc.name}
        ref = quant_ref(f"{prefix}.weight", (n_out, n_in), qw.file, qw.name, scheme)
        index.entries[ref.name] = QuantEntry(ref, parts, scheme, _awq_dequant(n_in, n_out, scheme.group_size))
        used.update(parts.values())
    _keep_rest(index, stored, used)
    return index


def _keep_rest(index: QuantIndex, stored: dict[str, TensorRef], used: set[str]) -> None:
    """Tensors no packed module consumed are read as stored (embeddings, norms, biases, the head)."""
    for name, ref in stored.items():
        if name not in used:
            index.plain[name] = ref
