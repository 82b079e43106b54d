"""Module roles, layer indices, wrapper prefixes and tied names, read from a data table."""

from modeldelta_mcp.architecture.table import ArchitectureTable, default_table

__all__ = ["ArchitectureTable", "default_table"]
