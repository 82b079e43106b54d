"""The streaming delta engine: chunked reads -> accumulated metrics and exact spectra."""

from modeldelta_mcp.engine.run import EngineOptions, EngineRun, run_engine

__all__ = ["EngineOptions", "EngineRun", "run_engine"]
