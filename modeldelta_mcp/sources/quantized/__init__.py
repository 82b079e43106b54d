"""Quantized checkpoints as they ship, read by dequantizing one weight at a time.

`index_quantized` reads the scheme a safetensors checkpoint declares (config.json `quantization_config`,
AutoGPTQ's quantize_config.json or optimum-quanto's quantization map) and returns the index of Hugging Face
weights it holds; `load_gguf_index` does the same for a .gguf file. An unsupported scheme is a one-line
SourceError naming it. formats.py registers both as WeightFormats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorRef
from modeldelta_mcp.sources.jsonfile import read_json_object
from modeldelta_mcp.sources.quantized.base import QuantIndex, QuantScheme
from modeldelta_mcp.sources.quantized.gguf import GGUFIndex, load_gguf_index

# AutoGPTQ (and gptqmodel for compatibility) also write the scheme to this side file.
GPTQ_SIDE_CONFIG = "quantize_config.json"
# optimum-quanto's quantization map: the name quanto's README saves it under, and the one
# QuantizedModelForCausalLM.save_pretrained writes.
QUANTO_MAPS = ("quantization_map.json", "quanto_qmap.json")
SIDE_CONFIGS = (GPTQ_SIDE_CONFIG, *QUANTO_MAPS)
SUPPORTED_METHODS = ("gptq", "awq", "bitsandbytes", "compressed-tensors", "fp8", "fbgemm_fp8", "quanto")


def _quanto_map(root: Path, qc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A quanto map beside the weights, as the quanto config (over config.json's QuantoConfig, if any)."""
    for name in QUANTO_MAPS:
        if (root / name).is_file():
            from modeldelta_mcp.sources.quantized.quanto import QMAP_FILE_KEY, QMAP_KEY

            return {**(qc or {}), "quant_method": "quanto", QMAP_KEY: read_json_object(root / name),
                    QMAP_FILE_KEY: name}
    return None


def declared_config(root: Path, config: dict[str, Any] | None) -> dict[str, Any] | None:
    qc = (config or {}).get("quantization_config")
    if isinstance(qc, dict) and str(qc.get("quant_method") or "").lower() != "quanto":
        return qc
    quanto = _quanto_map(root, qc if isinstance(qc, dict) else None)
    if quanto is not None:
        return quanto
    if isinstance(qc, dict):
        return qc
    side = root / GPTQ_SIDE_CONFIG
    if side.is_file():
        qc = read_json_object(side)
        qc.setdefault("quant_method", "gptq")
        return qc
    return None


def index_quantized(root: Path, stored: dict[str, TensorRef], qc: dict[str, Any],
                    other: dict[str, TensorRef] | None = None) -> QuantIndex:
    """The dequantizing index of a safetensors checkpoint under its declared quantization config. `other`:
    the other checkpoint's index, for weight shapes a format does not store (quanto's grouped weights)."""
    method = str(qc.get("quant_method") or "").lower()
    if method == "gptq":
        from modeldelta_mcp.sources.quantized.gptq_awq import index_gptq

        return index_gptq(stored, root, qc)
    if method == "awq":
        from modeldelta_mcp.sources.quantized.gptq_awq import index_awq

        return index_awq(stored, root, qc)
    if method == "bitsandbytes":
        from modeldelta_mcp.sources.quantized.bnb import index_bnb

        return index_bnb(stored, root, qc)
    if method == "compressed-tensors":
        from modeldelta_mcp.sources.quantized.compressed import index_compressed

        return index_compressed(stored, root, qc)
    if method in ("fp8", "fbgemm_fp8"):
        from modeldelta_mcp.sources.quantized.fp8 import index_fp8

        return index_fp8(stored, root, qc)
    if method == "quanto":
        from modeldelta_mcp.sources.quantized.quanto import index_quanto

        return index_quanto(stored, root, qc, other)
    raise SourceError(f"{root}: unsupported quantization scheme {method or '(unnamed)'!r} in quantization_config "
                      f"(supported: {', '.join(SUPPORTED_METHODS)}, and GGUF files)")


__all__ = ["GGUFIndex", "QuantIndex", "QuantScheme", "declared_config", "index_quantized", "load_gguf_index"]
