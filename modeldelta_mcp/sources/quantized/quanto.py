"""optimum-quanto checkpoints: the state_dict of a frozen quanto model, saved with safetensors.

quanto declares its scheme per module in a quantization map, {module: {"weights": qtype, "activations":
qtype}} (`optimum.quanto.quantization_map(model)`), which users save beside the weights as
`quantization_map.json` (quanto's README) and `QuantizedModelForCausalLM.save_pretrained` writes as
`quanto_qmap.json`. transformers' QuantoConfig declares one qtype for every converted module in config.json
(`quant_method: "quanto"`, `weights`: int8 | int4 | int2 | float8). Weights are quantized along axis 0 (one
scale per output row, or per group of a row). Per quantized module `P`:

- qint8, qfloat8_e4m3fn, qfloat8_e5m2 (quanto's WeightQBytesTensor): `P.weight._data` int8 / float8 in the
  weight's shape and `P.weight._scale` [out, 1] (a scalar for a one-row weight). W = _data · _scale.
- qint4, qint2 (WeightQBitsTensor): the weight in rows of G inputs (quanto picks G = 128, 96, 64 or 32, the
  first that divides an input width above 128; otherwise a row is a whole output row), R rows of unsigned
  codes packed into `P.weight._data._data` uint8 [⌈R/p⌉, G], p = 8/b codes a byte: code row r + k·⌈R/p⌉
  sits in bits [k·b, (k+1)·b) of packed row r (quanto's pack_weights). `P.weight._scale` and
  `P.weight._shift` [R, 1]: the shift is a float offset, W = scale · q − shift (quanto's default
  MaxOptimizer), or a uint8 zero point when the optimizer ran with zeropoint, W = scale · (q − shift). The
  rows are the weight in row-major order.
- `P.input_scale`, `P.output_scale`: activation calibration scalars, no weight of the source model.

A 2/4-bit weight's shape is not in the file (quanto takes it from the model class). It is read from the
module's bias [out] when there is one, else from the other checkpoint of a comparison (same name, same
size), else the weight is indexed in its stored layout [R, G] (its values in the weight's row-major order).
The math is quanto's own (QBytesDequantizer, QBitsDequantizer, unpack), in the scale's dtype as quanto
computes it (a bf16 model's weights are the bf16 products its dequantize() returns), handed out as float32;
the tests check the reader against quanto's dequantize() on checkpoints quanto wrote. quanto itself is not
imported here (nor needed to read these files).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorRef
from modeldelta_mcp.sources.quantized.base import QuantEntry, QuantIndex, QuantScheme, corrupt, quant_ref

# Where declared_config (sources/quantized/__init__.py) puts a map file's content and the file's name.
QMAP_KEY = "quantization_map"
QMAP_FILE_KEY = "quantization_map_file"
DATA, PACKED = ".weight._data", ".weight._data._data"
CALIBRATION = ("input_scale", "output_scale")
# transformers' QuantoConfig names -> quanto qtypes (transformers/integrations/quanto.py w_mapping)
CONFIG_QTYPES = {"int8": "qint8", "int4": "qint4", "int2": "qint2", "float8": "qfloat8_e4m3fn"}
CONFIG_DEFAULT = "int8"  # QuantoConfig(weights="int8") is transformers' default


@dataclass(frozen=True)
class QType:
    bits: int
    number_format: str
    stored: str  # dtype of weight._data (weight._data._data for the packed 2/4-bit types)


# quanto 0.2.7's weight qtypes (optimum/quanto/tensor/qtype.py), "qfloat8" its alias of e4m3fn.
# qfloat8_e4m3fnuz (ROCm) is refused by name: safetensors headers name that dtype, torch has it, but the
# header index of this package reads float8 as e4m3fn and e5m2 only.
QTYPES = {
    "qint8": QType(8, "int_symmetric", "int8"),
    "qfloat8_e4m3fn": QType(8, "fp8_e4m3", "float8_e4m3fn"),
    "qfloat8": QType(8, "fp8_e4m3", "float8_e4m3fn"),
    "qfloat8_e5m2": QType(8, "fp8_e5m2", "float8_e5m2"),
    "qint4": QType(4, "int_asymmetric", "uint8"),
    "qint2": QType(2, "int_asymmetric", "uint8"),
}
SHIFT_INTS = ("uint8", "int8")  # a zero point (quanto's zeropoint=True); float shifts are offsets


def _qtype_of(cfg: dict[str, Any], where: Path) -> Callable[[str], str | None]:
    """module name -> the weight qtype the file declares for it (None: weights not quantized)."""
    qmap = cfg.get(QMAP_KEY)
    if qmap is None:
        raw = str(cfg.get("weights") or CONFIG_DEFAULT)
        name = CONFIG_QTYPES.get(raw)
        if name is None:
            raise SourceError(f"{where}: unsupported optimum-quanto QuantoConfig weights {raw!r} "
                              f"(supported: {', '.join(CONFIG_QTYPES)})")
        return lambda module: name
    if not isinstance(qmap, dict) or not all(isinstance(v, dict) for v in qmap.values()):
        raise SourceError(f"{where}: not an optimum-quanto quantization map (module -> weights, activations)")

    def of(module: str) -> str | None:
        entry = qmap.get(module)
        weights = entry.get("weights") if isinstance(entry, dict) else None
        return None if weights in (None, "none") else str(weights)

    return of


def _need(stored: dict[str, TensorRef], where: Path, module: str, part: str) -> TensorRef:
    ref = stored.get(f"{module}.weight.{part}")
    if ref is None:
        raise SourceError(f"{where}: quanto module {module} has no {module}.weight.{part}")
    return ref


def _bytes_dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """quanto's QBytesDequantizer: scale · data in the scale's dtype, one scale per output row (or one)."""
    data, s = p["data"], p["scale"]
    s = s.reshape(()) if s.numel() == 1 else s.reshape(-1, *([1] * (data.dim() - 1)))
    return s * data.to(s.dtype)


def _bytes_entry(module: str, qname: str, qt: QType, data: TensorRef, scale: TensorRef, root: Path) -> QuantEntry:
    out = data.shape[0] if data.shape else 1
    if scale.numel == 1:
        granularity = "per_tensor"
    elif scale.shape and scale.shape[0] == out and scale.numel == out:
        granularity = "per_row"
    else:
        raise corrupt(root / scale.file, scale.name, f"shape {list(scale.shape)}, [{out}, 1] expected "
                      f"(one scale per row of {data.name})")
    scheme = QuantScheme(format="quanto", declared=qname, number_format=qt.number_format, bits=qt.bits,
                         group_size=None, granularity=granularity)
    ref = quant_ref(f"{module}.weight", data.shape, data.file, data.name, scheme)
    return QuantEntry(ref, {"data": data.name, "scale": scale.name}, scheme, _bytes_dequant)


def _bits_dequant(bits: int, layout: tuple[int, ...], shape: tuple[int, ...]):
    """quanto's unpack and QBitsDequantizer over the stored rows, reshaped to the weight (ungroup on axis 0)."""
    per = 8 // bits
    mask = (1 << bits) - 1
    rows = layout[0]
    lead = (rows, *([1] * (len(layout) - 1)))

    def dequant(p: dict[str, torch.Tensor]) -> torch.Tensor:
        packed = p["data"]
        codes = torch.cat([(packed >> (bits * k)) & mask for k in range(per)])[:rows]
        scale = p["scale"].reshape(lead)
        shift = p["shift"].reshape(lead)
        if shift.dtype.is_floating_point:
            w = scale * codes.to(scale.dtype)
            w -= shift  # in place, as quanto: the result keeps the scale's dtype
        else:
            w = scale * (codes.to(torch.int8) - shift.to(torch.int8)).to(scale.dtype)
        return w.reshape(shape)

    return dequant


def _shape(module: str, layout: tuple[int, ...], stored: dict[str, TensorRef], other: dict[str, TensorRef] | None,
           data: TensorRef, root: Path) -> tuple[int, ...] | None:
    """The weight's shape where the files tell it (see the module docstring), else None."""
    if len(layout) > 2:  # a convolution kept per output channel: the codes keep the kernel's shape
        return layout
    n, width = math.prod(layout), layout[1]
    bias = stored.get(f"{module}.bias")
    if bias is not None and len(bias.shape) == 1 and bias.shape[0] > 0:
        out = bias.shape[0]
        if n % out or (n // out) % width:
            raise corrupt(root / data.file, data.name, f"{layout[0]} rows of {width} codes do not make "
                          f"{out} output rows (the size of {bias.name})")
        return (out, n // out)
    ref = (other or {}).get(f"{module}.weight")
    if ref is not None and len(ref.shape) >= 2 and ref.numel == n and (n // ref.shape[0]) % width == 0:
        return ref.shape
    return None


def _bits_entry(module: str, qname: str, qt: QType, data: TensorRef, scale: TensorRef, shift: TensorRef,
                root: Path, stored: dict[str, TensorRef], other: dict[str, TensorRef] | None,
                ) -> tuple[QuantEntry, bool]:
    """The entry of a packed 2/4-bit weight, and whether its shape is known (else: its stored layout)."""
    rows = scale.shape[0] if scale.shape else 1
    if scale.numel != rows:
        raise corrupt(root / scale.file, scale.name, f"shape {list(scale.shape)}, one scale per row expected")
    if shift.numel != rows:
        raise corrupt(root / shift.file, shift.name, f"shape {list(shift.shape)}, [{rows}, 1] expected (one "
                      f"shift per row of {scale.name})")
    if not (shift.dtype in SHIFT_INTS or shift.dtype.startswith(("float", "bfloat"))):
        raise corrupt(root / shift.file, shift.name, f"dtype {shift.dtype}, a float offset or uint8 zero point "
                      "expected")
    per = 8 // qt.bits
    want = (math.ceil(rows / per), *data.shape[1:])
    if len(data.shape) < 2 or data.shape != want:
        raise corrupt(root / data.file, data.name, f"shape {list(data.shape)}, {list(want)} expected at {qt.bits} "
                      f"bits for {rows} scales")
    layout = (rows, *data.shape[1:])
    shape = _shape(module, layout, stored, other, data, root)
    width = layout[1] if len(layout) == 2 else None
    # grouped when a row of the weight holds more than one stored row; unknown shape: a stored row is a group
    grouped = width is not None and (shape is None or math.prod(shape[1:]) > width)
    scheme = QuantScheme(format="quanto", declared=qname, number_format=qt.number_format, bits=qt.bits,
                         group_size=width if grouped else None, granularity="per_group" if grouped else "per_row")
    final = shape or layout
    ref = quant_ref(f"{module}.weight", final, data.file, data.name, scheme)
    parts = {"data": data.name, "scale": scale.name, "shift": shift.name}
    files = {role: r.file for role, r in (("scale", scale), ("shift", shift)) if r.file != data.file}
    return QuantEntry(ref, parts, scheme, _bits_dequant(qt.bits, layout, final), files), shape is not None


def index_quanto(stored: dict[str, TensorRef], root: Path, cfg: dict[str, Any],
                 other: dict[str, TensorRef] | None = None) -> QuantIndex:
    """`other`: the other checkpoint's index, for the shapes of grouped weights the file does not hold."""
    where = root / str(cfg.get(QMAP_FILE_KEY) or "config.json")
    qtype_of = _qtype_of(cfg, where)
    index = QuantIndex("quanto")
    used: set[str] = set()
    modules: set[str] = set(cfg.get(QMAP_KEY) or ())
    for name, data in stored.items():
        packed = name.endswith(PACKED)
        if not packed and not name.endswith(DATA):
            continue
        module = name[: -len(PACKED if packed else DATA)]
        qname = qtype_of(module)
        if qname is None:
            raise SourceError(f"{where}: {name} is quantized, but the quantization map declares no weight qtype "
                              f"for module {module}")
        qt = QTYPES.get(qname)
        if qt is None:
            raise SourceError(f"{where}: unsupported optimum-quanto weight qtype {qname!r} (module {module}; "
                              f"supported: {', '.join(QTYPES)})")
        if packed != (qt.bits < 8):
            raise corrupt(root / data.file, name, f"{qname} weights are stored as {module}"
                          f"{PACKED if qt.bits < 8 else DATA}")
        if data.dtype != qt.stored:
            raise corrupt(root / data.file, name, f"dtype {data.dtype}, {qt.stored} expected for {qname}")
        scale = _need(stored, root, module, "_scale")
        if qt.bits == 8:
            entry = _bytes_entry(module, qname, qt, data, scale, root)
        else:
            entry, known = _bits_entry(module, qname, qt, data, scale, _need(stored, root, module, "_shift"), root,
                                       stored, other)
            if not known:
                index.unshaped.append(entry.ref.name)
        index.entries[entry.ref.name] = entry
        used.update(entry.parts.values())
        modules.add(module)
    for name, ref in stored.items():
        prefix, _, last = name.rpartition(".")
        if name not in used and not (last in CALIBRATION and prefix in modules):
            index.plain[name] = ref
    return index
