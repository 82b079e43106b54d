"""Forensics v2 (docs/diagnosis.md): derivations as they are made and saved — quantizers' round trips stored
in float32/bfloat16/float16, composed recipes, LoRA merges saved in half precision, pruning patterns and
reversed pairs — each with its method, recipe, direction and evidence.

Cases: tests/_forensics_v2.py, built once per session from the corpus of tests/_forensics_corpus.py.
"""

from __future__ import annotations

import pytest
from _forensics_corpus import Case
from _forensics_v2 import QUANT_CASES, V2Case, build_v2
from test_forensics_corpus import _finding, check_evidence, check_registered, report_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def v2_cases(tmp_path_factory: pytest.TempPathFactory, qwen_cases: dict[str, Case],
             bert_cases: dict[str, Case]) -> dict[str, V2Case]:
    return build_v2(tmp_path_factory.mktemp("forensics-v2"), qwen_cases, bert_cases)


def check(case: V2Case) -> None:
    diag = report_of(case).diagnostics
    check_registered(diag)
    codes = [f.code for f in diag.findings if f.category == "method"]
    assert diag.method == case.method, f"{case.name}: method {diag.method}, recipe {diag.recipe}, findings {codes}"
    if case.recipe is not None:
        assert diag.recipe == case.recipe, f"{case.name}: recipe {diag.recipe}"
    if case.direction is not None:
        assert diag.direction == case.direction, f"{case.name}: direction {diag.direction}"
    for step in diag.recipe:  # every step is a finding with its evidence
        assert step in codes or step == "full_finetune", f"{case.name}: step {step} has no finding ({codes})"
    check_evidence(case.name, _finding(diag, case.method), case.evidence)
    for code, evidence in case.step_evidence.items():
        step = _finding(diag, code)
        for key, want in evidence.items():
            assert step.evidence.get(key) == want, f"{case.name}: {code}.{key}={step.evidence.get(key)!r}"


QUANT_NAMES = [f"quant_{name}_{fmt}" for name, _ in QUANT_CASES for fmt in ("fp32", "bf16", "fp16")]


@pytest.mark.parametrize("name", QUANT_NAMES)
def test_forensics_v2_quantization_scheme_in_each_float_format(v2_cases: dict[str, V2Case], name: str) -> None:
    if name not in v2_cases:
        pytest.skip(f"{name}: its library does not run here")
    check(v2_cases[name])
    zeroed = [f for f in report_of(v2_cases[name]).diagnostics.findings if f.code == "pruning"]
    assert not zeroed, "a quantizer's zero level is not pruning"


@pytest.mark.parametrize("name", ["recipe_finetune_then_int4", "recipe_finetune_then_bf16", "recipe_bitfit_then_fp16",
                                  "recipe_lora_then_prune"])
def test_forensics_v2_composed_recipe(v2_cases: dict[str, V2Case], name: str) -> None:
    if name not in v2_cases:
        pytest.skip(f"{name}: its library does not run here")
    check(v2_cases[name])


@pytest.mark.parametrize("name", ["lora_merge_qwen_bf16", "lora_merge_qwen_fp16", "lora_merge_bert_bf16",
                                  "lora_merge_bert_fp16", "dora_merge_qwen_bf16", "dora_merge_bert_bf16"])
def test_forensics_v2_lora_merge_saved_in_half_precision(v2_cases: dict[str, V2Case], name: str) -> None:
    check(v2_cases[name])


@pytest.mark.parametrize("name", ["prune_2_4", "prune_4_8", "prune_mlp_units", "prune_heads"])
def test_forensics_v2_pruning_pattern(v2_cases: dict[str, V2Case], name: str) -> None:
    check(v2_cases[name])


@pytest.mark.parametrize("name", ["reversed_cast", "reversed_quant", "reversed_prune", "reversed_nf4_bf16"])
def test_forensics_v2_reversed_pair_describes_a(v2_cases: dict[str, V2Case], name: str) -> None:
    if name not in v2_cases:
        pytest.skip(f"{name}: its library does not run here")
    check(v2_cases[name])
