"""Numeric facts shared by the engine (which measures) and the diagnosis (which judges).

One place for each constant both sides need, so that a threshold and the counter it is compared
with cannot drift apart. No torch here: the diagnosis reads plain floats.
"""

from __future__ import annotations

# Unit roundoff u (half an ULP, relative) of the float formats weights are stored in or cast to,
# and of the dtypes the engine's eigensolvers work in.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-9}


def unit_roundoff(dtype: object) -> float:
    """u of a dtype given by name or as a torch dtype ("torch.bfloat16"); float32's when unknown."""
    return UNIT_ROUNDOFF.get(str(dtype).removeprefix("torch."), UNIT_ROUNDOFF["float32"])

# Half-precision formats a cast is tested against, finest first (a bf16 rounding step is 8 fp16 ULPs,
# so the two tests exclude each other).
CAST_FORMATS = ("float16", "bfloat16")

# A delta of numerical rank at most this fraction of min(m, n) is "low rank": LoRA's r is chosen far
# below the dimension (at r >= min(m, n)/2 a factorised update saves nothing), and a trained dense
# update is numerically full rank. The same line splits lora_merge from full_finetune, and flags the
# engine's rescaled-rank test (a delta already low rank needs none).
LOW_RANK_MAX_FRACTION = 0.5

# Floor of the numerical rank: a rounding-error matrix E with |E_ij| <= u·|B_ij| (i.i.d.-like) has top
# singular value ~ (u/√3)·rms(B)·(√m + √n) (Marchenko–Pastur edge); σ below this margin times
# u·rms(B)·(√m + √n) is rounding, not signal (the margin is ≈ 3.5× the edge).
RANK_FLOOR_MARGIN = 2.0
# A Gram solved in a dtype of unit roundoff u resolves eigenvalues only down to ~u·trace(G) (Weyl's bound
# on the product rounding plus the eigensolver's backward error): measured max |λ̂ - λ| / (u·trace G) over
# dense, planted, LoRA-bf16 and exactly low-rank deltas (896..4864 rows, 512..896 wide) was 0.81,
# dominated by the float32 eigensolver; 8x that is the floor. σ below sqrt(margin·u)·‖Δ‖_F cannot be
# told from zero (engine/spectrum.py, and the rank floor of engine/forensics.py).
UNRESOLVED_MARGIN = 8.0

# k-bit grid test: group sizes of group-wise quantizers in use (GPTQ/AWQ/bitsandbytes), and the
# granularity labels of the counters (`q_<label>_*`), coarsest first.
QUANT_GROUPS = (128, 64, 32)
QUANT_GRANULARITIES = ("row", *(f"g{g}" for g in QUANT_GROUPS))
# Bits beyond this are not a quantizer's grid (a float format's mixed-binade grid spans > 2^8 steps).
QUANT_MAX_BITS = 8

# Deciles of the singular values kept for the Marchenko–Pastur test, and their counter names.
DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DECILE_KEYS = tuple(f"sv_q{round(q * 100):02d}" for q in DECILES)
