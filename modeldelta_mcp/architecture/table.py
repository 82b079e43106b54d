"""The architecture table: name patterns -> role, layer index, vocabulary axis, tied names.

The patterns live in `roles.json` so that adding an architecture is a data change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import cast, get_args

from modeldelta_mcp.models import Role


@dataclass(frozen=True, eq=False)  # hashed by identity: the lru_caches key on self
class ArchitectureTable:
    wrapper_prefixes: tuple[str, ...]
    layer_patterns: tuple[re.Pattern[str], ...]
    role_rules: tuple[tuple[Role, re.Pattern[str]], ...]
    vocab_axis_roles: dict[str, int]
    tied: tuple[tuple[str, str], ...]

    def strip(self, name: str) -> str:
        """Drop one known wrapper prefix (model., bert., transformer., ...)."""
        for prefix in self.wrapper_prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name

    @lru_cache(maxsize=65536)  # noqa: B019 - the table is a process-wide singleton
    def role(self, name: str) -> Role:
        key = self.strip(name)
        for role, pattern in self.role_rules:
            if pattern.search(key):
                return role
        return "other"

    @lru_cache(maxsize=65536)  # noqa: B019
    def layer(self, name: str) -> int | None:
        key = self.strip(name)
        for pattern in self.layer_patterns:
            m = pattern.search(key)
            if m:
                return int(m.group(1))
        return None

    def vocab_axis(self, name: str) -> int | None:
        return self.vocab_axis_roles.get(self.role(name))


@lru_cache(maxsize=1)
def default_table() -> ArchitectureTable:
    raw = json.loads(resources.files("modeldelta_mcp.architecture").joinpath("roles.json").read_text())
    unknown = sorted({role for role, _ in raw["roles"]} - set(get_args(Role)))
    if unknown:  # a role the JSON contract (models.Role) does not know would break every answer that names it
        raise ValueError(f"architecture/roles.json: roles {unknown} are not in models.Role")
    return ArchitectureTable(
        wrapper_prefixes=tuple(raw["wrapper_prefixes"]),
        layer_patterns=tuple(re.compile(p) for p in raw["layer_patterns"]),
        role_rules=tuple((cast(Role, role), re.compile(p)) for role, p in raw["roles"]),
        vocab_axis_roles=dict(raw["vocab_axis_roles"]),
        tied=tuple((a, b) for a, b in raw["tied"]),
    )
