"""optimum-quanto checkpoints of MiniLM, written by optimum-quanto itself.

`write_quanto` loads the source with transformers (BertModel: the fixture's BERT names), runs quanto's
`quantize()` and `freeze()`, and saves as quanto's README shows: `save_file(model.state_dict(), ...)` and
`quantization_map(model)` as quantization_map.json, next to the source's config.json.
`declare="config"` takes transformers' QuantoConfig path instead (`from_pretrained(quantization_config=
QuantoConfig(...))`): transformers refuses to save_pretrained a quanto model ("not serializable"), so the
state_dict is saved the same way and the model's own config (which carries `quantization_config` with
`quant_method: "quanto"`) as config.json, without a map.

Each checkpoint comes with quanto's own `dequantize()` of a few weights, the reference the reader must equal.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

# Weights whose dequantized values are kept as the reference: square (query), tall (intermediate, 1536 out
# of 384 inputs: one group of 128 per 128 inputs, 3 a row), wide (output, 1536 inputs) and the pooler.
REFERENCE = ("encoder.layer.0.attention.self.query", "encoder.layer.1.intermediate.dense",
             "encoder.layer.2.output.dense", "pooler.dense")
CONFIG_WEIGHTS = {"qint8": "int8", "qint4": "int4", "qint2": "int2", "qfloat8_e4m3fn": "float8"}


@dataclass
class QuantoCheckpoint:
    path: Path
    qtype: str
    reference: dict[str, torch.Tensor] = field(default_factory=dict)  # "<module>.weight" -> dequantize()


def _zeropoint_optimizer():
    """quanto's MaxOptimizer asked for integer zero points (its `zeropoint=True`): shifts stored as uint8."""
    from optimum.quanto import MaxOptimizer

    class ZeroPoint(MaxOptimizer):
        def __call__(self, base, qtype, axis, group_size=None, zeropoint=False):
            return super().__call__(base, qtype, axis, group_size, zeropoint=True)

    return ZeroPoint()


def write_quanto(src: Path, dst: Path, qtype: str, declare: str = "map", zeropoint: bool = False,
                 dtype: torch.dtype = torch.float32) -> QuantoCheckpoint:
    """`dtype`: the model's dtype when quantized (quanto's scales and dequantized values take it)."""
    from optimum.quanto import freeze, qtypes, quantization_map, quantize
    from transformers import BertModel

    dst.mkdir(parents=True, exist_ok=True)
    if declare == "config":
        from transformers import QuantoConfig

        model = BertModel.from_pretrained(str(src), quantization_config=QuantoConfig(weights=CONFIG_WEIGHTS[qtype]))
        model.config.save_pretrained(str(dst))
    else:
        model = BertModel.from_pretrained(str(src), dtype=dtype)
        quantize(model, weights=qtypes[qtype], optimizer=_zeropoint_optimizer() if zeropoint else None)
        freeze(model)
        shutil.copy(src / "config.json", dst / "config.json")
        (dst / "quantization_map.json").write_text(json.dumps(quantization_map(model)))
    save_file(model.state_dict(), str(dst / "model.safetensors"))
    with torch.no_grad():
        ref = {f"{m}.weight": model.get_submodule(m).weight.dequantize().float().clone() for m in REFERENCE}
    return QuantoCheckpoint(dst, qtype, ref)


def without_biases(ckpt: QuantoCheckpoint, dst: Path) -> QuantoCheckpoint:
    """The checkpoint with its Linear biases left out: the shapes of its grouped weights are then not in the
    files (quanto stores the grouped rows; the model class knows the shape)."""
    from safetensors.torch import load_file

    dst.mkdir(parents=True, exist_ok=True)
    for side in ("config.json", "quantization_map.json"):
        shutil.copy(ckpt.path / side, dst / side)
    state = load_file(str(ckpt.path / "model.safetensors"))
    modules = json.loads((ckpt.path / "quantization_map.json").read_text())
    kept = {k: v for k, v in state.items() if k.removesuffix(".bias") not in modules}
    save_file(kept, str(dst / "model.safetensors"))
    return QuantoCheckpoint(dst, ckpt.qtype, ckpt.reference)
