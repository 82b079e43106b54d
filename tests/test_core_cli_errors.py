"""Bad inputs through the command line: one line naming the culprit, non-zero exit. NaN/Inf: a warning finding."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from _core_ckpt import TINY_CONFIG, run_cli, save_checkpoint
from click.testing import CliRunner

from modeldelta_mcp.cli import main_command
from modeldelta_mcp.models import ComparisonReport


def tiny(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"model.layers.0.self_attn.q_proj.weight": torch.randn(40, 32, generator=gen),
            "model.layers.0.mlp.up_proj.weight": torch.randn(64, 32, generator=gen),
            "model.norm.weight": torch.ones(32)}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "good", tiny(), config=TINY_CONFIG)


def invoke(*args: str):
    return CliRunner().invoke(main_command, [*args, "-q"])


def assert_one_line_error(result, *culprits: str) -> str:
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


def _safetensors_dir(tmp_path: Path, name: str, data: bytes) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "model.safetensors").write_bytes(data)
    return d


def test_missing_path(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    assert_one_line_error(invoke(str(good), str(missing)), str(missing), "no such file or directory")


def test_directory_without_weights(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    empty = tmp_path / "config_only"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(TINY_CONFIG))
    assert_one_line_error(invoke(str(empty), str(good)), str(empty), "no weights found")


def test_file_that_is_not_weights(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_one_line_error(invoke(str(good), str(notes)), str(notes), "not a weights file")


def test_truncated_safetensors(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    data = (good / "model.safetensors").read_bytes()
    bad = _safetensors_dir(tmp_path, "truncated", data[: len(data) // 2])
    assert_one_line_error(invoke(str(good), str(bad)), str(bad / "model.safetensors"))


def test_corrupt_safetensors_header(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    header = b"{this is not json" + b" " * 15
    bad = _safetensors_dir(tmp_path, "corrupt", struct.pack("<Q", len(header)) + header + b"\0" * 64)
    assert_one_line_error(invoke(str(good), str(bad)), str(bad / "model.safetensors"))


def test_garbage_bytes_as_safetensors(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    bad = _safetensors_dir(tmp_path, "garbage", bytes(range(256)) * 8)
    assert_one_line_error(invoke(str(bad), str(good)), str(bad / "model.safetensors"))


def test_oversized_header_length(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    """An 8-byte header length of 2^60: refused before any allocation of that size."""
    bad = _safetensors_dir(tmp_path, "huge_header", struct.pack("<Q", 2**60) + b'{"a": 1}')
    assert_one_line_error(invoke(str(good), str(bad)), str(bad / "model.safetensors"), "header")


def test_safetensors_data_shorter_than_header_says(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    bad = _safetensors_dir(tmp_path, "short", struct.pack("<Q", len(header)) + header + b"\0" * 100)
    assert_one_line_error(invoke(str(good), str(bad)), str(bad / "model.safetensors"))


def test_no_tensors_in_common(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    other = save_checkpoint(tmp_path / "other", {"encoder.block.0.layer.0.SelfAttention.q.weight": torch.ones(4, 4)})
    assert_one_line_error(invoke(str(good), str(other)), str(good), str(other), "no float tensors in common")


def test_console_script_reports_a_bad_input_in_one_line(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    """The installed `modeldelta` entry point, as a user runs it."""
    bad = _safetensors_dir(tmp_path, "huge_header", struct.pack("<Q", 2**60) + b"{}")
    proc = run_cli(str(good), str(bad), "-q", env={"MODELDELTA_CACHE_DIR": str(tmp_cache)})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(bad) in lines[0], proc.stderr


def _strict_json(text: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_inf_become_a_warning_finding(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    state = tiny()
    q = state["model.layers.0.self_attn.q_proj.weight"].clone()
    q[0, :3] = float("nan")
    q[5, 7] = float("inf")
    up = state["model.layers.0.mlp.up_proj.weight"] + 0.01
    up[2, 2] = float("-inf")
    bad = save_checkpoint(tmp_path / "nan", {**state, "model.layers.0.self_attn.q_proj.weight": q,
                                             "model.layers.0.mlp.up_proj.weight": up}, config=TINY_CONFIG)
    out = tmp_path / "report.json"
    result = invoke(str(good), str(bad), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    data = _strict_json(out.read_text())
    report = ComparisonReport.model_validate(data)
    findings = [f for f in report.diagnostics.findings if f.code == "nonfinite"]
    assert len(findings) == 1 and findings[0].severity == "warning"
    assert findings[0].metric_value == 5
    by_name = {m.name: m for m in report.modules}
    assert by_name["model.layers.0.self_attn.q_proj.weight"].nonfinite == 4
    assert by_name["model.layers.0.mlp.up_proj.weight"].nonfinite == 1
    assert by_name["model.norm.weight"].nonfinite == 0
    up_mod = by_name["model.layers.0.mlp.up_proj.weight"]
    assert up_mod.effective_rank is not None and up_mod.frob_norm > 0


# ---- the command group ---------------------------------------------------------------------------


def test_directories_named_like_subcommands_can_be_compared(tmp_cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path / "inspect", tiny(0), config=TINY_CONFIG)
    save_checkpoint(tmp_path / "demo", tiny(1), config=TINY_CONFIG)
    monkeypatch.chdir(tmp_path)
    for argv in (["compare", "inspect", "demo"], ["./inspect", "./demo"]):
        out = tmp_path / f"{argv[0].strip('./')}.json"
        result = invoke(*argv, "-o", str(out))
        assert result.exit_code == 0, result.stderr
        report = ComparisonReport.model_validate_json(out.read_text())
        assert (Path(report.model_a).name, Path(report.model_b).name) == ("inspect", "demo")
        assert report.totals.n_changed > 0
    # The bare form is `compare`; `inspect MODEL` is the subcommand.
    result = CliRunner().invoke(main_command, ["inspect", "demo"])
    assert result.exit_code == 0, result.stderr
    assert '"n_tensors": 3' in result.stdout


def test_an_unknown_output_suffix_fails_before_comparing(tmp_cache: Path, good: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke(str(good), str(good), "-o", str(tmp_path / "r.pdf")), "r.pdf", "unknown output format")
