"""Per-module agreement of our JSON report with modeldelta 0.4.4's on the same pair."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

# Metric -> tolerance (relative) for "equal to the seed's": effective rank 1% (the issue's target).
# Norms and cosines are exact float64 sums here, float32 reductions in the seed (measured deviation of the
# seed from float64: 2e-4 on 4.4M-entry tensors), hence 1e-3.
TOLERANCES = {
    "effective_rank": 0.01,
    "frob_norm": 1e-3,
    "frob_norm_relative": 1e-3,
    "cosine_sim": 1e-3,
    "sparsity": 1e-6,
    "concentration_top_k": 1e-3,
    "spectral_alpha": 1e-2,
    "sigma_1": 1e-4,
}


# modeldelta 0.4.4 reduces norms and cosines in float32 over the whole tensor: on ~1e8 entries its sums
# drift by up to a few % (measured: ‖Δ‖ of the 0.5B embedding 3.2670 against 3.33564 in float64, and a
# cosine clamped to 1.0). Those metrics are held to the tolerance only below this many entries.
SEED_FLOAT32_EXACT_BELOW = 2**24
SPECTRAL = {"effective_rank", "concentration_top_k", "spectral_alpha", "sigma_1"}
NORM_METRICS = ("frob_norm", "frob_norm_relative", "cosine_sim")
# A norm metric outside the tolerance is settled by a float64 recomputation from the files: ours counts
# as right when it matches float64 to this (relative), far below any float32 reduction's error.
FLOAT64_MATCH = 1e-9


def _tensor(root: Path, name: str) -> torch.Tensor:
    for f in sorted(root.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            if name in h.keys():
                return h.get_tensor(name)
    raise KeyError(f"{name} not in {root}")


def float64_norms(a_dir: Path, b_dir: Path, name: str) -> dict[str, float]:
    """The seed's norm metrics by their definitions, summed in float64 from the stored tensors."""
    a, b = _tensor(a_dir, name).double(), _tensor(b_dir, name).double()
    na, nb, nd = float(a.norm()), float(b.norm()), float((b - a).norm())
    return {"frob_norm": nd, "frob_norm_relative": nd / (na + 1e-12),
            "cosine_sim": max(-1.0, min(1.0, float((a * b).sum()) / (max(na, 1e-8) * max(nb, 1e-8))))}


def _rel(x: float | None, y: float | None) -> float:
    if x is None or y is None:
        return 0.0 if x is None and y is None else float("inf")
    return abs(x - y) / max(abs(x), abs(y), 1e-30)


def agreement(ours_json: Path, seed_json: Path, a_dir: Path | None = None, b_dir: Path | None = None) -> dict:
    """Max relative differences per metric; with the pair's directories, every norm metric outside the
    tolerance is recomputed in float64 and the difference charged to whichever side misses it."""
    ours = {m["name"]: m for m in json.loads(ours_json.read_text())["modules"]}
    seed = {m["name"]: m for m in json.loads(seed_json.read_text())["modules"]}
    worst: dict[str, tuple[float, str]] = {k: (0.0, "") for k in TOLERANCES}
    worst_large: dict[str, tuple[float, str]] = {k: (0.0, "") for k in TOLERANCES if k not in SPECTRAL}
    off_tolerance: list[tuple[str, str, float, float]] = []
    missing = [n for n in seed if n not in ours]
    for name, s in seed.items():
        o = ours.get(name)
        if o is None:
            continue
        pairs = {k: (o.get(k), s.get(k)) for k in ("frob_norm", "frob_norm_relative", "cosine_sim", "sparsity")}
        if s.get("has_svd"):
            pairs.update({k: (o.get(k), s.get(k)) for k in ("effective_rank", "concentration_top_k", "spectral_alpha")})
            o_top, s_top = o.get("top_singular_values") or [None], s.get("top_singular_values") or [None]
            pairs["sigma_1"] = (o_top[0], s_top[0])
        large = (s.get("n_params") or 0) >= SEED_FLOAT32_EXACT_BELOW
        for k, (x, y) in pairs.items():
            r = _rel(x, y)
            table = worst_large if large and k not in SPECTRAL else worst
            if r > table[k][0]:
                table[k] = (r, name)
            if k in NORM_METRICS and not large and r > TOLERANCES[k]:
                off_tolerance.append((name, k, x, y))
    settled = []
    for name, k, x, y in off_tolerance:
        if a_dir is None or b_dir is None:
            break
        ref = float64_norms(a_dir, b_dir, name)[k]
        settled.append({"module": name, "metric": k, "ours": x, "seed": y, "float64": ref,
                        "ours_rel_err": _rel(x, ref), "seed_rel_err": _rel(y, ref)})
    ours_right = {(e["module"], e["metric"]) for e in settled if e["ours_rel_err"] <= FLOAT64_MATCH}
    unsettled = [(n, k) for n, k, _, _ in off_tolerance if (n, k) not in ours_right]
    ok = not missing and not unsettled and all(
        worst[k][0] <= tol for k, tol in TOLERANCES.items() if k not in NORM_METRICS)
    return {
        "modules_compared": len(seed) - len(missing),
        "missing_in_ours": missing,
        "max_rel_diff": {k: {"value": v, "module": n} for k, (v, n) in worst.items()},
        "max_rel_diff_large_tensors": {k: {"value": v, "module": n} for k, (v, n) in worst_large.items()},
        "float64_checks": settled,
        "within_tolerance": ok,
        "tolerances": TOLERANCES,
    }
