"""modeldelta-mcp: how was checkpoint B made from checkpoint A, from the weights alone."""

__version__ = "0.1.0"
