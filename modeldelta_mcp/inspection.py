"""inspect_checkpoint: what a checkpoint holds, from its headers alone."""

from __future__ import annotations

from modeldelta_mcp.architecture import default_table
from modeldelta_mcp.compare import checkpoint_info
from modeldelta_mcp.models import InspectAnswer, TensorHeader
from modeldelta_mcp.sources import Checkpoint, resolve

LARGEST = 10


def inspect_checkpoint(model: str, token: str | None = None) -> InspectAnswer:
    # subset=True: a hub spec not in the cache has its headers read remotely, no shard downloaded.
    return describe(resolve(model, token=token, subset=True))


def describe(ckpt: Checkpoint) -> InspectAnswer:
    """An already resolved checkpoint's headers (the MCP server checks its files' paths in between)."""
    table = default_table()
    roles: dict[str, int] = {}
    layers = set()
    for name in ckpt.tensors:
        r = table.role(name)
        roles[r] = roles.get(r, 0) + 1
        layer = table.layer(name)
        if layer is not None:
            layers.add(layer)
    biggest = sorted(ckpt.tensors.values(), key=lambda t: t.numel, reverse=True)[:LARGEST]
    return InspectAnswer(
        checkpoint=checkpoint_info(ckpt),
        n_layers=len(layers) or None,
        roles=dict(sorted(roles.items())),
        largest_tensors=[TensorHeader(name=t.name, shape=list(t.shape), dtype=t.dtype, role=table.role(t.name),
                                      layer=table.layer(t.name)) for t in biggest],
    )
