"""Checks on untrusted checkpoint files, made before anything is allocated, and one-line errors.

A header or a pickle may claim anything (a petabyte tensor, a shard outside the checkpoint, a rank of
zero): what it claims is checked against the file it sits in. A library's message (serde's list of every
dtype, miniz's paragraph of advice) is cut to the part that says what is wrong, so that every SourceError
is one line of at most MAX_MESSAGE characters that starts with the file's path.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from modeldelta_mcp.errors import MAX_MESSAGE, SourceError

# Untrusted text (tensor names, values from a header) quoted in a message is cut to this many characters
# (real tensor names stay under it: the longest Hugging Face names run to ~70).
SHOWN_CHARS = 80
# A reason shorter than this is not worth keeping when the path alone nearly fills the message.
MIN_REASON = 16

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Rewrites of library messages to the part that matters, applied in order.
_CUTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(Error while deserializing header: )"), ""),
    (re.compile(r"^invalid JSON in header: "), "bad header: "),
    (re.compile(r"unknown variant (`[^`]{0,40})[^`]*`, expected one of .*"), r"unknown dtype \1`"),
    (re.compile(r",? expected one of .*"), ""),
    (re.compile(r" at line \d+ column \d+"), ""),
    (re.compile(r"\. This is an internal miniz error.*"), ""),
    (re.compile(r"^PytorchStreamReader failed "), ""),
    (re.compile(r"\"([^\"]{30})[^\"]{2,}\""), r'"\1…"'),
    (re.compile(r"`([^`]{30})[^`]{2,}`"), r"`\1…`"),
]


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """Untrusted text as it may appear in a message: one line, at most `limit` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def reason(exc: BaseException) -> str:
    """What a library's exception says is wrong, in a few words."""
    text = _ANSI.sub("", str(exc)).strip()
    text = " ".join(text.split()) or type(exc).__name__
    for pattern, repl in _CUTS:
        text = pattern.sub(repl, text)
    return text.strip() or type(exc).__name__


def file_error(path: Path | str, what: str, exc: BaseException | None = None) -> SourceError:
    """SourceError "PATH: WHAT (REASON)", REASON cut so that the whole stays within MAX_MESSAGE."""
    msg = f"{path}: {what}"
    if exc is not None:
        why = reason(exc)
        room = MAX_MESSAGE - len(msg) - 3
        if room >= MIN_REASON:
            msg += f" ({why if len(why) <= room else why[: room - 1] + '…'})"
    return SourceError(msg)


# ---- sizes claimed by headers and pickles --------------------------------------------------------------


def check_claimed_bytes(path: Path, claims: Iterable[tuple[str, int]]) -> None:
    """Tensors cannot hold more bytes than their file: refuse a header claiming otherwise before any read."""
    size = path.stat().st_size
    total = 0
    for name, nbytes in claims:
        total += nbytes
        if nbytes > size or total > size:
            raise SourceError(f"{path}: tensor {shown(name)} claims {nbytes:,} bytes, the file holds {size:,}")


def check_torch_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A torch pickle's tensors must fit their storages (a stride-0 view may claim any size) and the file."""
    size = path.stat().st_size
    for name, t in state.items():
        need = t.numel() * t.element_size()
        held = t.untyped_storage().nbytes()
        if need > max(held, size) and t.numel() > 1:
            raise SourceError(f"{path}: tensor {shown(name)} claims {need:,} bytes, its file holds {size:,}")


# ---- side files -------------------------------------------------------------------------------------------


def shard_names(index_path: Path, weight_map: dict[Any, Any]) -> list[str]:
    """The shard files a sharded index names: plain relative paths inside its directory."""
    files = set()
    for tensor, rel in weight_map.items():
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise SourceError(f"{index_path}: weight_map[{shown(tensor)!r}] is not a file name")
        parts = PurePosixPath(rel).parts
        if os.path.isabs(rel) or ".." in parts or "\\" in rel or rel != rel.strip():
            raise SourceError(f"{index_path}: shard {shown(rel)!r} is outside the checkpoint directory")
        files.add(rel)
    return sorted(files)


def config_str(config: dict[str, Any] | None, key: str) -> str | None:
    value = (config or {}).get(key)
    return value if isinstance(value, str) else None


def _number(cfg_path: Path, key: str, value: Any, positive_int: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if positive_int:
        ok = ok and isinstance(value, int) and value > 0
    if not ok:
        want = "a positive integer" if positive_int else "a finite number"
        raise SourceError(f"{cfg_path}: {key} must be {want}, not {shown(value, 30)}")
    return value


def adapter_settings(cfg: dict[str, Any], cfg_path: Path) -> dict[str, Any]:
    """The numbers of a PEFT adapter_config.json that the expansion uses, type-checked."""
    r = int(_number(cfg_path, "r", cfg.get("r", 8), positive_int=True))
    alpha = float(_number(cfg_path, "lora_alpha", cfg.get("lora_alpha", r)))
    patterns = {}
    for key in ("alpha_pattern", "rank_pattern"):
        pattern = cfg.get(key) or {}
        if not isinstance(pattern, dict):
            raise SourceError(f"{cfg_path}: {key} must be an object of module pattern -> number")
        for k, v in pattern.items():
            _number(cfg_path, f"{key}[{shown(k, 30)!r}]", v)
            try:
                re.compile(k)
            except re.error as exc:
                raise SourceError(f"{cfg_path}: {key} key {shown(k, 30)!r} is not a pattern ({exc})") from exc
        patterns[key] = pattern
    flags = {}
    for key in ("use_rslora", "fan_in_fan_out", "use_dora"):
        value = cfg.get(key, False)
        if value is not None and not isinstance(value, bool):
            raise SourceError(f"{cfg_path}: {key} must be true or false, not {shown(value, 30)}")
        flags[key] = bool(value)
    peft_type = cfg.get("peft_type", "LORA")
    if not isinstance(peft_type, str):
        raise SourceError(f"{cfg_path}: peft_type must be a string, not {shown(peft_type, 30)}")
    return {"r": r, "lora_alpha": alpha, "peft_type": peft_type.upper(), **patterns, **flags}


def check_lora_factors(weight_file: Path, module: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """LoRA A (r × in) and B (out × r) of one module: 2-D, the same rank r ≥ 1, finite values."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] == 0 or a.shape[0] != b.shape[1]:
        raise SourceError(f"{weight_file}: module {shown(module)} has LoRA factors of shapes {list(a.shape)} and "
                          f"{list(b.shape)}, not r×in and out×r")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise SourceError(f"{weight_file}: module {shown(module)} has NaN or Inf in its LoRA factors")
