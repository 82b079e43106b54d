"""schemas/*.schema.json (JSON Schema 2020-12) generated from the pydantic contracts in models.py.

    python -m modeldelta_mcp.schemas            # (re)write schemas/ in the repository root
    python -m modeldelta_mcp.schemas --check    # exit 1 when a checked-in file drifts from the models

One file per MCP tool answer (named after the tool: the same schema as the tool's outputSchema) and
report.schema.json for the full report (`-o report.json`, resource modeldelta://reports/{report_id}).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from modeldelta_mcp import models
from modeldelta_mcp.generate import generator_main

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS: dict[str, type[BaseModel]] = {
    "report": models.ComparisonReport,
    "compare_checkpoints": models.CompareSummary,
    "get_diagnosis": models.DiagnosisAnswer,
    "top_changed_modules": models.TopModulesAnswer,
    "layer_profile": models.LayerProfileAnswer,
    "inspect_checkpoint": models.InspectAnswer,
    "compare_many": models.CompareManyAnswer,
    "find_base": models.FindBaseAnswer,
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schema_of(model: type[BaseModel]) -> dict:
    """The model's validation schema (what MCPServer publishes as outputSchema) with its dialect declared."""
    return {"$schema": DIALECT, **model.model_json_schema()}


def render(name: str) -> str:
    return json.dumps(schema_of(SCHEMAS[name]), indent=2, ensure_ascii=False) + "\n"


def file_name(name: str) -> str:
    return f"{name}.schema.json"


def drift(directory: Path) -> list[str]:
    """Names of the schema files that are missing or differ from the models."""
    out = []
    for name in SCHEMAS:
        path = directory / file_name(name)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(name):
            out.append(file_name(name))
    return out


def write(directory: Path) -> list[Path]:
    from modeldelta_mcp.store import atomic_write_text

    paths = []
    for name in SCHEMAS:
        path = directory / file_name(name)
        atomic_write_text(path, render(name))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    def check(directory: Path) -> tuple[str | None, str]:
        stale = drift(directory)
        return (f"schemas out of date in {directory}: {', '.join(stale)}" if stale else None,
                f"{len(SCHEMAS)} schemas in {directory} match the models")

    return generator_main("modeldelta_mcp.schemas", __doc__ or "", "dir", DEFAULT_DIR, "output directory", check,
                          write, argv)


if __name__ == "__main__":
    sys.exit(main())
