"""Store keys: the one place where a pair's identity (and its options) is hashed.

A checkpoint's identity is a string its source computes (hub commit, or file names, sizes and mtimes);
the store only combines two of them, never looks inside.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from modeldelta_mcp import __version__
from modeldelta_mcp.errors import ModelDeltaError, one_line

REPORT_ID_PATTERN = r"^[0-9a-f]{16}$"
_REPORT_ID = re.compile(REPORT_ID_PATTERN)
# Options that change the numbers are part of the key; the device and memory budget do not.
KEYED_OPTIONS = ("top_k", "spectrum")


def _digest(material: object, sort_keys: bool = False) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=sort_keys).encode()).hexdigest()


@dataclass(frozen=True)
class PairIdentity:
    """Two checkpoint identities, in order (A, then B)."""

    a: str
    b: str
    # The tensor filter (select.TensorFilter.key()), when one narrows the comparison: a filtered report is
    # another report. None leaves the keys of unfiltered comparisons as they always were.
    selection: Mapping[str, object] | None = None

    def key(self, options: Mapping[str, object]) -> str:
        """The full key of one comparison (also names its resume journal). Only KEYED_OPTIONS count."""
        opts = {k: v for k, v in options.items() if k in KEYED_OPTIONS}
        extra = [self.selection] if self.selection is not None else []
        return _digest([self.a, self.b, opts, __version__, *extra], sort_keys=True)

    def report_id(self, options: Mapping[str, object]) -> str:
        return self.key(options)[:16]

    @property
    def pair_key(self) -> str:
        """The pair regardless of options: finds an earlier report of the same two checkpoints."""
        extra = [self.selection] if self.selection is not None else []
        return _digest([self.a, self.b, *extra], sort_keys=bool(extra))[:16]


def is_report_id(text: str) -> bool:
    return bool(_REPORT_ID.match(text))


def check_report_id(report_id: str) -> str:
    if not is_report_id(report_id):
        # Cut: the id comes from the caller and may be anything (a path, 5,000 characters).
        raise ModelDeltaError(f"report_id {one_line(repr(report_id), 40)}: expected 16 lowercase hex characters")
    return report_id
