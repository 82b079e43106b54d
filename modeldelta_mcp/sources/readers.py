"""Pick the reader for a checkpoint's format."""

from __future__ import annotations

from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader


def open_reader(ckpt: Checkpoint) -> TensorReader:
    if ckpt.fmt == "adapter":
        from modeldelta_mcp.sources.peft_adapter import AdapterReader

        return AdapterReader(ckpt)
    if ckpt.fmt == "torch":
        from modeldelta_mcp.sources.torch_files import TorchBinReader

        return TorchBinReader(ckpt.root, ckpt.tensors)
    from modeldelta_mcp.sources.safetensors_files import SafetensorsReader

    return SafetensorsReader(ckpt.root, ckpt.tensors)
