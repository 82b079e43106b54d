"""Small JSON side files of a checkpoint (config, shard index, adapter config)."""

from __future__ import annotations

import json
from pathlib import Path

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.guard import file_error


def read_json_object(path: Path) -> dict:
    """A JSON object from `path`, or a one-line SourceError naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than json parses
        raise file_error(path, "unreadable JSON", exc) from exc
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected a JSON object")
    return data
