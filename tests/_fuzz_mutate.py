"""Mutations for the fuzz campaign: format-aware (safetensors header JSON, pickle operands, JSON trees) and
byte-level (flips, overwrites, truncation, splices). A case is a pure function of (seed, kind, index), so a
failure is reproduced by its id alone (`write_case`)."""

from __future__ import annotations

import io
import json
import pickletools
import random
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Values a mutated field may take: wrong types, extremes, a petabyte-sized dimension, text that would break
# a one-line message (newlines) or a path (traversal).
HUGE = [2**50, 2**62, 2**63 - 1, 2**64, 10**30, 2**31, 2**32 + 1, 1 << 40]
INTS = [0, 1, -1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 255, 4096, *HUGE, -(2**63)]
STRINGS = ["", "x", "F32", "BF16", "F4", "I64", "BOOL", "U8", "F8_E4M3", "float32", "NaN", "../../etc/passwd",
           "/etc/passwd", "a\nb", "é" * 40, "x" * 5000, "model.safetensors", "pytorch_model.bin", "lora_A",
           "q_proj", ".*", "(a+)+b", "[", "\u0000", "model-00001-of-00002.safetensors"]
ATOMS: list[Any] = [None, True, False, 0.5, float("inf"), -1e308, 1e308, [], {}, *INTS, *STRINGS]


DEEP = "__deep_nesting__"


def dump(obj: Any, indent: int | None = None) -> bytes:
    text = json.dumps(obj, allow_nan=True, indent=indent)
    text = text.replace(json.dumps(DEEP), "[" * 5000 + "1" + "]" * 5000)
    return text.encode("utf-8", "surrogatepass")


def _atom(rng: random.Random) -> Any:
    choice = rng.random()
    if choice < 0.1:
        return [rng.choice(INTS) for _ in range(rng.randint(0, 4))]
    if choice < 0.15:
        return {rng.choice(STRINGS): rng.choice(ATOMS)}
    return rng.choice(ATOMS)


# ---- byte level --------------------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random, hot: int | None = None) -> tuple[bytes, str]:
    """One to three byte-level edits; `hot` (a length) biases positions into the first `hot` bytes (a header)."""
    buf = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 3)):
        n = len(buf)
        if n == 0:
            buf.extend(rng.randbytes(rng.randint(1, 16)))
            done.append("fill")
            continue
        span = hot if hot and rng.random() < 0.6 else n
        pos = rng.randrange(min(span, n))
        op = rng.randrange(7)
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                p = rng.randrange(min(span, n))
                buf[p] ^= 1 << rng.randrange(8)
            done.append(f"flip@{pos}")
        elif op == 1:
            k = rng.randint(1, 16)
            buf[pos:pos + k] = bytes([rng.choice([0, 0xFF, 0x7F, 0x80, 0x22, 0x5B, 0x7B])]) * k
            done.append(f"fill@{pos}+{k}")
        elif op == 2:
            del buf[rng.randrange(n):]
            done.append("truncate")
        elif op == 3:
            buf.extend(rng.randbytes(rng.randint(1, 64)))
            done.append("append")
        elif op == 4:
            k = rng.randint(1, 64)
            del buf[pos:pos + k]
            done.append(f"delete@{pos}+{k}")
        elif op == 5:
            k = rng.randint(1, 64)
            src = rng.randrange(n)
            buf[pos:pos] = buf[src:src + k]
            done.append(f"dup@{pos}+{k}")
        else:
            k = rng.randint(1, 8)
            buf[pos:pos + k] = rng.randbytes(k)
            done.append(f"rand@{pos}+{k}")
    return bytes(buf), "bytes:" + ",".join(done)


# ---- JSON trees -------------------------------------------------------------------------------------------


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = root
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return root


def _delete(root: Any, path: tuple) -> Any:
    node = root
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return root


def mutate_tree(obj: Any, rng: random.Random, extra: list[Callable[[Any, random.Random], str]] | None = None
                ) -> tuple[Any, str]:
    """One to three structural edits of a parsed JSON document."""
    done = []
    for _ in range(rng.randint(1, 3)):
        if extra and rng.random() < 0.4:
            done.append(rng.choice(extra)(obj, rng))
            continue
        paths = _paths(obj)
        path = rng.choice(paths)
        op = rng.randrange(4)
        if op == 0 or not path:
            value = _atom(rng)
            obj = _set(obj, path, value)
            done.append(f"set{list(path)[-2:]}")
        elif op == 1:
            obj = _delete(obj, path)
            done.append(f"del{list(path)[-2:]}")
        elif op == 2:
            parent = obj
            for p in path[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                parent[rng.choice(STRINGS)] = parent.pop(path[-1])
                done.append("rename")
            else:
                parent.append(_atom(rng))
                done.append("append")
        else:
            # Deep nesting: 5000 levels pass json's recursion limit (spliced in as text by `dump`).
            depth = rng.choice([2, 50, 5000])
            value: Any = DEEP if depth == 5000 else 1
            for _ in range(depth if depth < 5000 else 0):
                value = [value]
            obj = _set(obj, path, value)
            done.append(f"nest{depth}")
    return obj, "tree:" + ",".join(done)


def mutate_json_file(data: bytes, rng: random.Random,
                     extra: list[Callable[[Any, random.Random], str]] | None = None) -> tuple[bytes, str]:
    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    obj = json.loads(data)
    obj, how = mutate_tree(obj, rng, extra)
    return dump(obj, None if rng.random() < 0.9 else 1), how


def _index_edits() -> list[Callable[[Any, random.Random], str]]:
    def point_elsewhere(obj: Any, rng: random.Random) -> str:
        wm = obj.get("weight_map") if isinstance(obj, dict) else None
        if isinstance(wm, dict) and wm:
            key = rng.choice(list(wm))
            wm[key] = rng.choice(["../st_single/model.safetensors", "/etc/hostname", "", ".", "missing.safetensors",
                                  "config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json",
                                  "sub/../" + str(wm[key]), str(wm[key]) + "\n"])
        return "shard->elsewhere"

    def swap_tensor(obj: Any, rng: random.Random) -> str:
        wm = obj.get("weight_map") if isinstance(obj, dict) else None
        if isinstance(wm, dict) and len(wm) > 1:
            keys = list(wm)
            a, b = rng.sample(keys, 2)
            wm[a], wm[b] = wm[b], wm[a]
            if rng.random() < 0.5:
                wm["model.layers.9.self_attn.q_proj.weight"] = wm[a]
        return "shard-swap"

    return [point_elsewhere, swap_tensor]


# ---- safetensors -------------------------------------------------------------------------------------------


def _st_split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _st_join(header: dict, payload: bytes, rng: random.Random) -> bytes:
    text = dump(header)
    if rng.random() < 0.2:
        text += b" " * rng.randint(1, 9)  # padding the format allows
    return struct.pack("<Q", len(text)) + text + payload


def _st_edits() -> list[Callable[[Any, random.Random], str]]:
    def tensor(obj: dict, rng: random.Random) -> tuple[str, dict] | None:
        if not isinstance(obj, dict):
            return None
        names = [k for k in obj if k != "__metadata__" and isinstance(obj[k], dict)]
        if not names:
            return None
        name = rng.choice(names)
        return name, obj[name]

    def huge_shape(obj: dict, rng: random.Random) -> str:
        hit = tensor(obj, rng)
        if hit:
            hit[1]["shape"] = rng.choice([[2**25, 2**25], [2**50], [2**40, 2**40], [2**62, 4], [-1, 8], [0, 8],
                                          [8, 8, 8, 8, 8, 8, 8, 8], [], [2**64]])
        return "huge-shape"

    def dims_off_by_one(obj: dict, rng: random.Random) -> str:
        hit = tensor(obj, rng)
        if hit and isinstance(hit[1].get("shape"), list) and hit[1]["shape"]:
            shape = hit[1]["shape"]
            i = rng.randrange(len(shape))
            if isinstance(shape[i], int):
                shape[i] += rng.choice([-1, 1])
        return "dim+-1"

    def offsets(obj: dict, rng: random.Random) -> str:
        hit = tensor(obj, rng)
        if hit and isinstance(hit[1].get("data_offsets"), list) and len(hit[1]["data_offsets"]) == 2:
            lo, hi = hit[1]["data_offsets"]
            hit[1]["data_offsets"] = rng.choice([[hi, lo], [0, 2**60], [lo, lo], [lo, hi + 4], [lo + 4, hi + 4],
                                                 [-8, hi], [0, 0], [lo, 2**64 - 1], [2**63, 2**63 + 8]])
        return "offsets"

    def dtype(obj: dict, rng: random.Random) -> str:
        hit = tensor(obj, rng)
        if hit:
            hit[1]["dtype"] = rng.choice(["F32", "F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "F8_E4M3",
                                          "F8_E5M2", "F4", "F6_E2M3", "E8M0", "C64", "XYZ", "f32", "", 4])
        return "dtype"

    def rename(obj: dict, rng: random.Random) -> str:
        hit = tensor(obj, rng)
        if hit:
            obj[rng.choice(STRINGS) + rng.choice(["", ".weight", "\n.weight"])] = obj.pop(hit[0])
        return "rename"

    def alias(obj: dict, rng: random.Random) -> str:
        hit = tensor(obj, rng)
        if hit:
            obj[hit[0] + ".alias"] = dict(hit[1])
        return "alias"

    def metadata(obj: dict, rng: random.Random) -> str:
        if not isinstance(obj, dict):
            return "metadata-skipped"
        obj["__metadata__"] = rng.choice([{"format": 5}, [], "x", {"format": "pt", "k": "v" * 3000}, None,
                                          {"format": "np"}, {"total_size": "1"}])
        return "metadata"

    return [huge_shape, dims_off_by_one, offsets, dtype, rename, alias, metadata]


def mutate_safetensors(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    header, payload = _st_split(data)
    r = rng.random()
    if r < 0.55:
        header, how = mutate_tree(header, rng, _st_edits())
        return _st_join(header, payload, rng), how
    if r < 0.65:
        text = data[8:8 + struct.unpack("<Q", data[:8])[0]]
        n = rng.choice([0, 1, 7, len(text) - 1, len(text) + 1, len(text) + 8, len(data), 2**40, 2**63 - 1, 2**64 - 1,
                        rng.randrange(2**64)])
        return struct.pack("<Q", n) + data[8:], f"header-len={n}"
    hot = 8 + struct.unpack("<Q", data[:8])[0]
    return mutate_bytes(data, rng, hot=hot)


# ---- pickles (torch .bin) ------------------------------------------------------------------------------------

_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG", "LONG4"}
_STR_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING"}


def _encode_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _encode_str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def mutate_pickle(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Replace operands of the pickle (ints: storage sizes, shapes, strides, offsets; strings: keys, dtypes,
    class names) or edit its bytes. Protocol 2 pickles (torch.save's) hold no frame lengths to fix up."""
    if rng.random() < 0.25:
        return mutate_bytes(data, rng)
    ops = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]
    positions = list(range(len(ops)))
    edits = []
    out = bytearray(data)
    chosen = sorted(rng.sample(positions, min(len(positions), rng.randint(1, 3))), reverse=True)
    for idx in chosen:
        name, _arg, pos = ops[idx]
        end = ops[idx + 1][2] if idx + 1 < len(ops) else len(data)
        if name in _INT_OPS:
            new = _encode_int(rng.choice(INTS))
        elif name in _STR_OPS:
            new = _encode_str(rng.choice([*STRINGS, "torch", "collections", "OrderedDict", "_rebuild_tensor_v2",
                                          "FloatStorage", "HalfStorage", "LongStorage", "builtins", "eval", "os",
                                          "system", "0", "1"]))
        else:
            new = rng.choice([b"", b"N", b"K\x05", b")", b"}", b"0", b"R", b"t", b"s", b"e", b"(", b"."])
        out[pos:end] = new
        edits.append(f"{name}@{pos}")
    return bytes(out), "pickle:" + ",".join(edits)


def mutate_torch_zip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Edit the pickle inside the zip (re-zipped, so the archive stays valid) or the archive's own bytes."""
    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    how = ""
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("data.pkl"):
                body, how = mutate_pickle(body, rng)
            elif "/data/" in info.filename and rng.random() < 0.1:
                body = body[: rng.randrange(len(body) + 1)]  # a storage record shorter than the pickle claims
                how += f" short:{info.filename.rsplit('/', 1)[-1]}"
            dst.writestr(info, body)
    return buf.getvalue(), how


def mutate_torch_legacy(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Legacy (non-zip) torch.save: a sequence of pickles then raw storages with int64 sizes."""
    if rng.random() < 0.5:
        return mutate_bytes(data, rng)
    # The fifth pickle holds the state dict; edit the operands of the leading pickles in place.
    stream = io.BytesIO(data)
    starts = []
    for _ in range(4):
        starts.append(stream.tell())
        for _op, _arg, _pos in pickletools.genops(stream):
            pass
    starts.append(stream.tell())
    k = rng.randrange(4)
    head, body, tail = data[:starts[k]], data[starts[k]:starts[k + 1]], data[starts[k + 1]:]
    new, how = mutate_pickle(body, rng)
    if rng.random() < 0.3 and len(tail) > 8:
        # Somewhere in the storages: most likely a data word, sometimes a storage's int64 size field.
        cut = rng.randrange(len(tail) - 8)
        tail = tail[:cut] + struct.pack("<Q", rng.choice(HUGE[:4]) % 2**64) + tail[cut + 8:]
        how += f" +int64@{cut}"
    return head + new + tail, how


# ---- GGUF ---------------------------------------------------------------------------------------------------

# GGUF's header: magic, version (u32), tensor count and metadata count (u64): counts a reader loops over.
_GGUF_COUNTS = (8, 16)


def mutate_gguf(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """The header's counts, one of the 64-bit lengths in the metadata and tensor infos (string lengths,
    array lengths, dims, offsets) made huge, or byte-level edits biased to the first KB."""
    r = rng.random()
    if r < 0.2:
        at = rng.choice(_GGUF_COUNTS)
        value = rng.choice([0, 1, 2**31, 2**40, 2**63 - 1, 2**64 - 1])
        return data[:at] + struct.pack("<Q", value) + data[at + 8:], f"count@{at}={value}"
    if r < 0.45:
        at = rng.randrange(24, min(len(data), 4096) - 8)
        value = rng.choice([2**32, 2**40, 2**50, 2**63 - 1, 2**64 - 1, 0])
        return data[:at] + struct.pack("<Q", value) + data[at + 8:], f"u64@{at}={value}"
    return mutate_bytes(data, rng, hot=2048)


# ---- the kinds ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    seed: str  # seed directory mutated (a copy of it)
    target: str  # file in it that is mutated
    mutate: Callable[[bytes, random.Random], tuple[bytes, str]]
    base: str | None = None  # model_a of the comparison; None: the unmutated seed itself
    by_file: bool = False  # the spec names the target file (a .gguf), not the directory


KINDS: dict[str, Kind] = {
    "safetensors": Kind("st_single", "model.safetensors", mutate_safetensors),
    "safetensors_shard": Kind("st_sharded", "model-00002-of-00002.safetensors", mutate_safetensors),
    "safetensors_index": Kind("st_sharded", "model.safetensors.index.json",
                              lambda d, r: mutate_json_file(d, r, _index_edits())),
    "config": Kind("st_single", "config.json", mutate_json_file),
    "bin_zip": Kind("bin_zip", "pytorch_model.bin", mutate_torch_zip),
    "bin_legacy": Kind("bin_legacy", "pytorch_model.bin", mutate_torch_legacy),
    "bin_index": Kind("bin_sharded", "pytorch_model.bin.index.json",
                      lambda d, r: mutate_json_file(d, r, _index_edits())),
    "adapter_config": Kind("adapter_st", "adapter_config.json", mutate_json_file, base="st_single"),
    "adapter_safetensors": Kind("adapter_st", "adapter_model.safetensors", mutate_safetensors, base="st_single"),
    "adapter_bin": Kind("adapter_bin", "adapter_model.bin", mutate_torch_zip, base="st_single"),
    "gguf": Kind("gguf", "model.gguf", mutate_gguf, base="gguf_src", by_file=True),
}


def case_rng(seed: int, kind: str, i: int) -> random.Random:
    return random.Random(f"{seed}:{kind}:{i}")


def write_case(seeds: dict[str, Path], kind: str, seed: int, i: int, case_dir: Path) -> tuple[Path, str]:
    """Copy the kind's seed into `case_dir` (replacing it) and mutate its target; returns (target, how)."""
    spec = KINDS[kind]
    if case_dir.exists():
        shutil.rmtree(case_dir)
    shutil.copytree(seeds[spec.seed], case_dir)
    target = case_dir / spec.target
    data, how = spec.mutate(target.read_bytes(), case_rng(seed, kind, i))
    target.write_bytes(data)
    return target, how
