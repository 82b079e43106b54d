"""The seed's calibrated thresholds (modeldelta 0.4.4, 7 base->instruct pairs), kept as they are
so profile tags stay comparable with the seed and with the O/Q paper's table."""

# Mean ΔW/W bands: Qwen2.5 family < 0.015 (surgical); Llama-3.1 / Mistral SFT < 0.05 (standard);
# Llama-3.2-3B < 0.12 (heavy); Gemma-2-9B above (extreme).
FROB_SURGICAL = 0.015
FROB_STANDARD = 0.05
FROB_HEAVY = 0.12

# Mean top-k energy concentration: above -> semi-structured (LoRA-like); below the second -> full rank.
CONC_LOW_RANK = 0.15
CONC_FULL_RANK = 0.08

# attention/MLP mean relative change: above -> balanced, below -> MLP-heavy.
ATTN_MLP_BALANCED = 0.95

# Norm weights' mean relative change: below -> untouched; above the second -> recalibrated.
LN_UNTOUCHED = 0.001
LN_MODIFIED = 0.01

# Head/embedding change against the body mean: above -> the head is the most changed module.
HEAD_BODY_RATIO = 2.0

# Layer profile: ratio of the mean change of the outer quarters to the middle half.
# The seed tested ratio < 0.92 for a U (inverted); a U is ends changing MORE than the middle,
# so the band is symmetric around 1: > 1/0.92 is a U, < 0.92 an inverted U, between is flat.
U_SHAPE_LOW = 0.92
U_SHAPE_HIGH = 1 / 0.92
# Fewer layers than this make quarters meaningless.
MIN_LAYERS_FOR_PROFILE = 5
