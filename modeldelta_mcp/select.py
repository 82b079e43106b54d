"""Tensor filters: `--include` / `--exclude` globs on tensor names and `--layers 0-7,20`.

Globs follow fnmatch (case-sensitive; `*` crosses dots, so `*.q_proj.*` matches every layer's q
projection). A tensor is kept when it matches any include (or no include is given) and no exclude, and,
with `layers`, when it lies in one of those layers (tensors outside any layer, such as embeddings, are
then left out). A pair is kept when either side's stored name is kept, so a wrapper prefix present on one
side only does not hide a tensor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from modeldelta_mcp.errors import ModelDeltaError

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
# A layer list longer than any model has layers is a typo (e.g. "0-70000"), not a request.
MAX_LAYER_INDEX = 100_000


def parse_layers(text: str) -> tuple[int, ...]:
    """"0-7,20" -> (0, 1, ..., 7, 20); a one-line ModelDeltaError naming the argument otherwise."""
    out: set[int] = set()
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise ModelDeltaError(f"layers {text!r}: expected comma-separated indices or ranges such as 0-7,20")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo or hi > MAX_LAYER_INDEX:
            raise ModelDeltaError(f"layers {text!r}: range {part.strip()} is empty or out of bounds")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


@dataclass(frozen=True)
class TensorFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layers: str | None = None  # as given ("0-7,20"); parsed into `layer_set`

    def __post_init__(self) -> None:
        for pattern in (*self.include, *self.exclude):
            if not pattern or not pattern.strip():
                raise ModelDeltaError("include/exclude: empty glob pattern")
        if self.layers is not None:
            parse_layers(self.layers)  # fail early, with the argument named

    @classmethod
    def of(cls, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
           layers: str | None = None) -> TensorFilter:
        return cls(tuple(include or ()), tuple(exclude or ()), layers if layers and layers.strip() else None)

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude or self.layers)

    @property
    def layer_set(self) -> frozenset[int] | None:
        return frozenset(parse_layers(self.layers)) if self.layers is not None else None

    def keeps_name(self, name: str) -> bool:
        if self.include and not any(fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatchcase(name, p) for p in self.exclude)

    def keeps(self, names: Iterable[str], layer: int | None, layer_set: frozenset[int] | None = None) -> bool:
        wanted = layer_set if layer_set is not None else self.layer_set
        if wanted is not None and (layer is None or layer not in wanted):
            return False
        return any(self.keeps_name(n) for n in names)

    @classmethod
    def from_key(cls, key: dict[str, Any]) -> TensorFilter:
        """The filter a store index entry recorded (the inverse of `key`)."""
        layers = key.get("layers")
        return cls(tuple(key.get("include") or ()), tuple(key.get("exclude") or ()),
                   ",".join(str(i) for i in layers) if layers else None)

    def key(self) -> dict[str, Any] | None:
        """What goes into the store key (None when nothing is filtered, so old keys stay valid)."""
        if not self.active:
            return None
        return {"include": sorted(self.include), "exclude": sorted(self.exclude),
                "layers": list(parse_layers(self.layers)) if self.layers else None}


NO_FILTER = TensorFilter()
