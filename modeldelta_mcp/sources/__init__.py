"""Checkpoint sources: resolve a spec to a tensor index without reading tensor data."""

from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader, TensorRef
from modeldelta_mcp.sources.resolve import resolve
from modeldelta_mcp.sources.spec import ModelSpec

__all__ = ["Checkpoint", "ModelSpec", "TensorReader", "TensorRef", "resolve"]
