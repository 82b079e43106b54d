"""Diagnosis: ModuleDelta rows -> profile tag, method, findings, summary. Pure functions, no I/O."""

from modeldelta_mcp.diagnosis.diagnose import diagnose

__all__ = ["diagnose"]
