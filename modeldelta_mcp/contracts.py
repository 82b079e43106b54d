"""docs/contracts.md, generated from the code: what agents and scripts may rely on.

    python -m modeldelta_mcp.contracts            # (re)write docs/contracts.md
    python -m modeldelta_mcp.contracts --check    # exit 1 when the checked-in file drifts from the code

Tools and their arguments come from the MCP server's own tool list, report fields from the pydantic models'
JSON Schema, finding codes and evidence keys from diagnosis/codes.py, the method precedence from the
fingerprints. Nothing here is written by hand, so the document cannot drift from what the code does.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from modeldelta_mcp.generate import generator_main
from modeldelta_mcp.store import atomic_write_text

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "contracts.md"


def _type(prop: dict[str, Any]) -> str:
    """A JSON Schema property as a short type: `string`, `list[Finding]`, `"exact" | "fast"`, ..."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " | ".join(_type(p) for p in prop["anyOf"])
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list[{_type(prop.get('items', {}))}]"
    if kind == "object":
        extra = prop.get("additionalProperties")
        return f"dict[string, {_type(extra)}]" if isinstance(extra, dict) else "object"
    bounds = [f"{op} {prop[key]}" for key, op in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"))
              if key in prop]
    if "pattern" in prop:
        bounds.append(f"pattern `{prop['pattern']}`")
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _fields_table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | description |", "|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        flag = "" if name in required else " (optional)"
        rows.append(f"| `{name}`{flag} | {_cell(_type(prop))} | {_cell(prop.get('description', ''))} |")
    return rows


def _tools_section() -> list[str]:
    from modeldelta_mcp.server import build_server

    server = build_server()
    tools = anyio.run(server.list_tools)
    templates = anyio.run(server.list_resource_templates)
    out = ["## Tools", "",
           "Every tool answers with `structuredContent` that validates against `schemas/<tool>.schema.json` "
           "and a short text. Unknown arguments are refused.", ""]
    for tool in tools:
        first = (tool.description or "").split("\n\n")[0]
        out += [f"### `{tool.name}`", "", _cell(first), "", "| argument | type | default | description |",
                "|---|---|---|---|"]
        schema = tool.input_schema
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            default = "required" if name in required else f"`{json.dumps(prop.get('default'))}`"
            out.append(f"| `{name}` | {_cell(_type(prop))} | {default} | {_cell(prop.get('description', ''))} |")
        out += ["", f"Answer: `schemas/{tool.name}.schema.json`.", ""]
    out += ["### Resources", ""]
    for t in templates:
        out.append(f"- `{t.uri_template}` ({t.mime_type}): {_cell(t.description or '')}")
    return [*out, ""]


def _report_section() -> list[str]:
    from modeldelta_mcp.models import ComparisonReport
    from modeldelta_mcp.schemas import schema_of

    schema = schema_of(ComparisonReport)
    out = ["## The report", "",
           "`ComparisonReport` (`-o report.json`, resource `modeldelta://reports/{report_id}`, "
           "`schemas/report.schema.json`). Fields are only ever added, never renamed.", "",
           "### ComparisonReport", "", *_fields_table(schema), ""]
    for name, sub in schema.get("$defs", {}).items():
        if "properties" in sub:
            out += [f"### {name}", "", *_fields_table(sub), ""]
    return out


def _findings_section() -> list[str]:
    from modeldelta_mcp.diagnosis.codes import FINDING_CODES
    from modeldelta_mcp.diagnosis.fingerprints import PRECEDENCE, TRANSFORMS, primary_method
    from modeldelta_mcp.diagnosis.recipe import LOSSY

    default = primary_method([])
    out = ["## Finding codes", "",
           "Branch on `diagnostics.method` and each finding's `code` (with its `evidence`), never on the wording "
           "of `title`, `detail` or `summary`. A finding's evidence holds at most these keys. How each "
           "fingerprint decides: `docs/diagnosis.md`.", "",
           "| code | category | evidence keys | meaning |", "|---|---|---|---|"]
    for c in FINDING_CODES:
        keys = ", ".join(f"`{k}`" for k in c.evidence)
        out.append(f"| `{c.code}` | {c.category} | {keys} | {_cell(c.meaning)} |")
    out += ["", "## Method precedence", "",
            "`diagnostics.recipe` lists the steps of the derivation in the order they were applied (training, then "
            "`pruning`, then the storing cast or quantization); `diagnostics.method` is its first step. Among the "
            "findings of one step, and for a one-step recipe, the method is the first code of this list whose "
            f"finding holds (`{default}` when none does):", ""]
    out += [f"{i}. `{code}`" for i, code in enumerate(PRECEDENCE, start=1)]
    out += ["", f"Whole-model transforms ({', '.join(f'`{c}`' for c in TRANSFORMS)}) are peeled off first: the "
            "tensors they alone explain count as unchanged when the training fingerprints are read. Lossy steps "
            f"({', '.join(f'`{c}`' for c in LOSSY)}) go one way: `diagnostics.direction` is `a_from_b` when only A "
            "shows them, and the method, recipe and evidence then describe how A was made from B "
            "(docs/diagnosis.md).", ""]
    return out


def render() -> str:
    head = ["# Contracts", "",
            "<!-- Generated by `python -m modeldelta_mcp.contracts` from the code; do not edit by hand. -->", "",
            inspect.cleandoc("""
            What agents and scripts may rely on: the MCP tools and their arguments, the fields of the report,
            every finding code with its evidence keys, and the order in which the method is chosen. Codes and
            fields only grow; none is ever renamed. JSON Schemas of every answer: `schemas/`."""), ""]
    return "\n".join([*head, *_tools_section(), *_report_section(), *_findings_section()]).rstrip("\n") + "\n"


def drifted(path: Path) -> bool:
    return not path.is_file() or path.read_text(encoding="utf-8") != render()


def main(argv: list[str] | None = None) -> int:
    def check(path: Path) -> tuple[str | None, str]:
        return (f"{path} is out of date" if drifted(path) else None, f"{path} matches the code")

    def write(path: Path) -> list[Path]:
        atomic_write_text(path, render())
        return [path]

    return generator_main("modeldelta_mcp.contracts", __doc__ or "", "path", DEFAULT_PATH, "output file", check,
                          write, argv)


if __name__ == "__main__":
    sys.exit(main())
