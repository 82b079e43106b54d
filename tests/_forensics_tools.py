"""Quantize/dequantize round trips made with the libraries people use (where they run on CPU).

Each scheme maps one weight matrix, in the dtype the model was loaded in (float32, bfloat16, float16), to
what the library's dequantization returns in that dtype: the values a checkpoint exported after
quantization holds. Expectations are the scheme's documented parameters (number format, granularity,
group size, bits), never measured values. A library that is not installed or does not run here is
skipped by `available()`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scheme:
    name: str
    library: str
    number_format: str
    granularity: str
    group_size: int | None
    bits: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    min_cols: int = 16  # narrowest input dimension the scheme applies to as documented

    def applies(self, w: torch.Tensor) -> bool:
        """Group- and block-wise schemes need the input dimension to be a multiple of the group, as model
        dimensions are (bitsandbytes' CPU kernels do not block a flattened 192-wide matrix by 128)."""
        cols = w.shape[1]
        return cols >= self.min_cols and cols % (self.group_size or 1) == 0


def _bnb_4bit(kind: str, block: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(w: torch.Tensor) -> torch.Tensor:
        from bitsandbytes import functional as F

        q, state = F.quantize_4bit(w.contiguous(), blocksize=block, quant_type=kind)
        return F.dequantize_4bit(q, state).to(w.dtype)
    return run


def _bnb_int8(w: torch.Tensor) -> torch.Tensor:
    """LLM.int8 weights (bitsandbytes Linear8bitLt): absmax per output row, 127 levels a side."""
    from bitsandbytes import functional as F

    q, stats, _ = F.int8_vectorwise_quant(w.to(torch.float16).contiguous())
    return (q.float() * stats.float()[:, None] / 127).to(w.dtype)


def _quanto(qtype_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(w: torch.Tensor) -> torch.Tensor:
        import optimum.quanto as oq

        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        lin.weight.data = w.clone()
        model = torch.nn.Sequential(lin)
        oq.quantize(model, weights=getattr(oq, qtype_name))
        oq.freeze(model)
        return model[0].weight.dequantize().detach().to(w.dtype)
    return run


def _torchao(config: Callable[[], object]) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(w: torch.Tensor) -> torch.Tensor:
        from torchao.quantization import quantize_

        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        lin.weight.data = w.clone()
        model = torch.nn.Sequential(lin)
        quantize_(model, config())
        return model[0].weight.dequantize().detach().to(w.dtype)
    return run


def _ao_intx(bits: int, group: int | None, symmetric: bool) -> Callable[[], object]:
    def config() -> object:
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerAxis, PerGroup
        from torchao.quantization.quant_primitives import MappingType

        return IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                    granularity=PerGroup(group) if group else PerAxis(0),
                                    mapping_type=MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC)
    return config


def _ao_int8() -> object:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def _compressed(bits: int, kind: str, strategy: str, group: int | None, symmetric: bool
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """compressed-tensors' fake quantization (what llmcompressor's round-to-nearest QuantizationModifier runs)."""
    def run(w: torch.Tensor) -> torch.Tensor:
        from compressed_tensors.quantization import QuantizationArgs
        from compressed_tensors.quantization.lifecycle.forward import fake_quantize
        from compressed_tensors.quantization.utils import calculate_qparams

        args = QuantizationArgs(num_bits=bits, type=kind, strategy=strategy, group_size=group, symmetric=symmetric)
        if strategy == "group":
            x = w.reshape(w.shape[0], -1, group)
            lo, hi = x.amin(dim=2), x.amax(dim=2)
        elif strategy == "channel":
            lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
        else:
            lo, hi = w.amin().reshape(1), w.amax().reshape(1)
        scale, zero = calculate_qparams(lo, hi, args)
        return fake_quantize(w, scale, zero, args).to(w.dtype)
    return run


SCHEMES = [
    Scheme("bnb_nf4", "bitsandbytes", "nf4", "per_block", 64, 4, _bnb_4bit("nf4", 64), min_cols=1),
    Scheme("bnb_fp4", "bitsandbytes", "fp4", "per_block", 64, 4, _bnb_4bit("fp4", 64), min_cols=1),
    Scheme("bnb_nf4_b128", "bitsandbytes", "nf4", "per_block", 128, 4, _bnb_4bit("nf4", 128), min_cols=1),
    Scheme("bnb_int8", "bitsandbytes", "int_symmetric", "per_row", None, 8, _bnb_int8),
    Scheme("quanto_int8", "optimum.quanto", "int_symmetric", "per_row", None, 8, _quanto("qint8")),
    Scheme("quanto_fp8_e4m3", "optimum.quanto", "fp8_e4m3", "per_row", None, 8, _quanto("qfloat8_e4m3fn")),
    Scheme("quanto_fp8_e5m2", "optimum.quanto", "fp8_e5m2", "per_row", None, 8, _quanto("qfloat8_e5m2")),
    Scheme("quanto_int4", "optimum.quanto", "int_asymmetric", "per_group", 128, 4, _quanto("qint4"), min_cols=128),
    Scheme("quanto_int2", "optimum.quanto", "int_asymmetric", "per_group", 128, 2, _quanto("qint2"), min_cols=128),
    Scheme("torchao_int8", "torchao", "int_symmetric", "per_row", None, 8, _torchao(_ao_int8)),
    Scheme("torchao_int4_g32_asym", "torchao", "int_asymmetric", "per_group", 32, 4,
           _torchao(_ao_intx(4, 32, False))),
    Scheme("torchao_int4_g64_sym", "torchao", "int_symmetric", "per_group", 64, 4, _torchao(_ao_intx(4, 64, True)),
           min_cols=128),
    Scheme("torchao_int3_g32_sym", "torchao", "int_symmetric", "per_group", 32, 3, _torchao(_ao_intx(3, 32, True))),
    Scheme("torchao_int2_row_asym", "torchao", "int_asymmetric", "per_row", None, 2,
           _torchao(_ao_intx(2, None, False))),
    Scheme("ct_int8_channel", "compressed_tensors", "int_symmetric", "per_row", None, 8,
           _compressed(8, "int", "channel", None, True)),
    Scheme("ct_int4_g128_sym", "compressed_tensors", "int_symmetric", "per_group", 128, 4,
           _compressed(4, "int", "group", 128, True), min_cols=256),
    Scheme("ct_int4_g32_asym", "compressed_tensors", "int_asymmetric", "per_group", 32, 4,
           _compressed(4, "int", "group", 32, False)),
    Scheme("ct_int8_tensor", "compressed_tensors", "int_symmetric", "per_tensor", None, 8,
           _compressed(8, "int", "tensor", None, True)),
    Scheme("ct_fp8_tensor", "compressed_tensors", "fp8_e4m3", "per_tensor", None, 8,
           _compressed(8, "float", "tensor", None, True)),
    Scheme("ct_fp8_channel", "compressed_tensors", "fp8_e4m3", "per_row", None, 8,
           _compressed(8, "float", "channel", None, True)),
]


def available(library: str) -> bool:
    """Installed and able to run a round trip on this machine."""
    if importlib.util.find_spec(library.split(".")[0]) is None:
        return False
    scheme = next(s for s in SCHEMES if s.library == library)
    try:
        scheme.fn(torch.randn(8, 256) * 0.05)
    except Exception:  # a library that cannot run here is skipped
        return False
    return True


def apply(state: dict[str, torch.Tensor], names: list[str], scheme: Scheme, dtype: torch.dtype
          ) -> dict[str, torch.Tensor]:
    """The model loaded in `dtype`, the named matrices quantized and dequantized, everything saved in `dtype`."""
    out = {}
    for k, v in state.items():
        w = v.to(dtype) if v.is_floating_point() else v.clone()
        if k in names and scheme.applies(w):
            w = scheme.fn(w)
        out[k] = w.contiguous()
    return out
