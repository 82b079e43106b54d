"""Hub access through huggingface_hub, for real, against a local server that speaks the hub API.

Each run is the installed `modeldelta` console script with HF_ENDPOINT pointing at the fake hub and
HF_HOME in a tmp dir, so that huggingface_hub reads its settings the way it does for a user.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _core_ckpt import TINY_CONFIG, run_cli
from _core_fakehub import FakeHub
from safetensors.torch import save as save_bytes

from modeldelta_mcp.models import ComparisonReport, InspectAnswer
from modeldelta_mcp.sources.spec import looks_like_repo_id, split_spec

TOKEN = "hf_fake_s3cret"
Q = "model.layers.0.self_attn.q_proj.weight"


def _weights(shift: float) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {Q: torch.randn(24, 16, generator=gen) + shift, "model.norm.weight": torch.ones(16),
            "model.embed_tokens.weight": torch.randn(64, 16, generator=gen)}


def _bin(tensors: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()


def _repo_files(shift: float, with_bin: bool = True) -> dict[str, bytes]:
    files = {"model.safetensors": save_bytes(_weights(shift)), "config.json": json.dumps(TINY_CONFIG).encode(),
             "README.md": b"# a model card that must not be downloaded\n"}
    if with_bin:  # the same weights again as .bin: safetensors win, the .bin is never fetched
        files["pytorch_model.bin"] = _bin(_weights(shift))
    return files


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        fake.refs = {  # type: ignore[attr-defined]
            "org/tiny": fake.add_repo("org/tiny", {"main": _repo_files(0.0), "v1": _repo_files(0.5),
                                                   "refs/pr/1": _repo_files(0.25)}),
            "org/binonly": fake.add_repo("org/binonly", {"main": {"pytorch_model.bin": _bin(_weights(0.0)),
                                                                  "config.json": json.dumps(TINY_CONFIG).encode()}}),
            "org/private": fake.add_repo("org/private", {"main": _repo_files(0.0, with_bin=False)}, token=TOKEN),
            "org/nothing": fake.add_repo("org/nothing", {"main": {"README.md": b"no weights here"}}),
        }
        yield fake


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf_home")


def hub_env(hub: FakeHub, hf_home: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "MODELDELTA_CACHE_DIR": str(tmp_path / "store"),
           "HF_HUB_DISABLE_XET": "1"}
    env.update(extra)
    return env


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_group(env: dict[str, str], commands: dict[str, list[str]]) -> dict[str, Run]:
    """Several command lines in one fresh process with `env` (see _core_clidriver.py)."""
    driver = Path(__file__).with_name("_core_clidriver.py")
    proc = subprocess.run([sys.executable, str(driver), json.dumps(list(commands.values()))], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    return {label: Run(r["exit_code"], r["stdout"], r["stderr"]) for label, r in zip(commands, results, strict=True)}


def _one_line_error(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def online(hub: FakeHub, hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every online command line, run once against the fake hub in one process (HF_HOME shared)."""
    tmp = tmp_path_factory.mktemp("online")
    sha_v1 = hub.refs["org/tiny"]["v1"]  # type: ignore[attr-defined]
    runs = run_group(hub_env(hub, hf_home, tmp), {
        "compare": ["org/tiny", "org/tiny@v1", "-q", "-o", str(tmp / "online.json")],
        "sha": ["inspect", f"org/tiny@{sha_v1}"],
        "binonly": ["inspect", "org/binonly"],
        "pr_ref": ["inspect", "org/tiny@refs/pr/1"],
        "missing_repo": ["org/tiny", "org/does-not-exist", "-q"],
        "missing_revision": ["org/tiny@nope", "org/tiny", "-q"],
        "no_weights": ["org/tiny", "org/nothing", "-q"],
        "private_no_token": ["inspect", "org/private"],
    })
    runs["compare"].stdout = (tmp / "online.json").read_text() if runs["compare"].returncode == 0 else ""
    return runs


def test_org_name_and_revision_then_offline_from_cache(hub: FakeHub, hf_home: Path, online: dict[str, Run],
                                                        tmp_path: Path) -> None:
    refs = hub.refs["org/tiny"]  # type: ignore[attr-defined]
    assert online["compare"].returncode == 0, online["compare"].stderr
    report = ComparisonReport.model_validate_json(online["compare"].stdout)
    a, b = report.checkpoints.a, report.checkpoints.b
    assert (a.source, a.revision, b.source, b.revision) == ("hub", refs["main"], "hub", refs["v1"])
    assert a.files == ["model.safetensors"] and a.architecture == "LlamaForCausalLM"
    by_name = {m.name: m for m in report.modules}
    assert by_name[Q].frob_norm == pytest.approx(0.5 * (24 * 16) ** 0.5, rel=1e-5)
    assert by_name["model.norm.weight"].identical
    fetched = [r.path for r in hub.requests if r.method == "GET" and "org/tiny" in r.path]
    assert any(p.endswith("/resolve/" + refs["v1"] + "/model.safetensors") for p in fetched)
    assert not any(p.endswith(("README.md", "pytorch_model.bin")) for p in fetched), "weights and config only"

    # The hub goes quiet: HF_HUB_OFFLINE=1 serves both revisions from the cache, no request made.
    # This run is the installed console script itself, as a user types it.
    n_requests = len(hub.requests)
    out = tmp_path / "offline.json"
    proc = run_cli("org/tiny", "org/tiny@v1", "-q", "-o", str(out), "--no-cache",
                   env=hub_env(hub, hf_home, tmp_path, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr
    assert len(hub.requests) == n_requests
    offline = ComparisonReport.model_validate_json(out.read_text())
    assert (offline.checkpoints.a.revision, offline.checkpoints.b.revision) == (refs["main"], refs["v1"])
    assert {m.name: m.frob_norm for m in offline.modules} == {m.name: m.frob_norm for m in report.modules}


def test_commit_sha_as_revision(hub: FakeHub, online: dict[str, Run]) -> None:
    sha = hub.refs["org/tiny"]["v1"]  # type: ignore[attr-defined]
    assert online["sha"].returncode == 0, online["sha"].stderr
    answer = InspectAnswer.model_validate_json(online["sha"].stdout)
    assert answer.checkpoint.revision == sha and answer.checkpoint.n_tensors == 3


def test_revision_with_slashes(hub: FakeHub, online: dict[str, Run]) -> None:
    assert looks_like_repo_id("org/tiny@refs/pr/1") and split_spec("org/tiny@refs/pr/1") == ("org/tiny", "refs/pr/1")
    assert not looks_like_repo_id("org/tiny/extra") and not looks_like_repo_id("./org/tiny")
    assert online["pr_ref"].returncode == 0, online["pr_ref"].stderr
    answer = InspectAnswer.model_validate_json(online["pr_ref"].stdout)
    assert answer.checkpoint.revision == hub.refs["org/tiny"]["refs/pr/1"]  # type: ignore[attr-defined]


def test_bin_only_repo_downloads_the_bin(online: dict[str, Run]) -> None:
    assert online["binonly"].returncode == 0, online["binonly"].stderr
    answer = InspectAnswer.model_validate_json(online["binonly"].stdout)
    assert answer.checkpoint.files == ["pytorch_model.bin"] and answer.checkpoint.n_tensors == 3


def test_missing_repo_and_revision_are_one_line_errors(online: dict[str, Run]) -> None:
    line = _one_line_error(online["missing_repo"])
    assert "org/does-not-exist" in line and "no such repo" in line
    line = _one_line_error(online["missing_revision"])
    assert "org/tiny@nope" in line and "revision" in line
    line = _one_line_error(online["no_weights"])
    assert "org/nothing" in line and "no safetensors" in line


def test_offline_without_a_cached_copy_is_a_one_line_error(hub: FakeHub, tmp_path: Path) -> None:
    env = hub_env(hub, tmp_path / "empty_home", tmp_path, HF_HUB_OFFLINE="1")
    runs = run_group(env, {"offline": ["inspect", "org/tiny"]})
    line = _one_line_error(runs["offline"])
    assert "org/tiny" in line and "HF_HUB_OFFLINE" in line


def test_token_is_passed_to_every_request(hub: FakeHub, online: dict[str, Run], tmp_path: Path) -> None:
    line = _one_line_error(online["private_no_token"])
    assert "org/private" in line and "--token" in line

    # --token on the command line, then HF_TOKEN in the environment (fresh HF_HOME: files fetched again)
    start = len(hub.requests)
    runs = run_group(hub_env(hub, tmp_path / "home", tmp_path), {"flag": ["inspect", "org/private", "--token", TOKEN]})
    assert runs["flag"].returncode == 0, runs["flag"].stderr
    sent = [r for r in hub.requests[start:] if "org/private" in r.path]
    assert sent and all(r.authorization == f"Bearer {TOKEN}" for r in sent)
    assert any("/resolve/" in r.path and r.method == "GET" for r in sent)

    start = len(hub.requests)
    runs = run_group(hub_env(hub, tmp_path / "home2", tmp_path, HF_TOKEN=TOKEN), {"env": ["inspect", "org/private"]})
    assert runs["env"].returncode == 0, runs["env"].stderr
    sent = [r for r in hub.requests[start:] if "org/private" in r.path]
    assert sent and all(r.authorization == f"Bearer {TOKEN}" for r in sent)


def test_unreachable_hub_falls_back_to_the_cache(hub: FakeHub, hf_home: Path, online: dict[str, Run],
                                                 tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE, but nothing listens at HF_ENDPOINT: a cached snapshot still serves, else one line."""
    assert online["compare"].returncode == 0  # org/tiny@main is in hf_home's cache now
    env = hub_env(hub, hf_home, tmp_path, HF_ENDPOINT="http://127.0.0.1:9")  # discard port: connection refused
    runs = run_group(env, {"cached": ["inspect", "org/tiny"], "never": ["inspect", "org/never-downloaded"]})
    assert runs["cached"].returncode == 0, runs["cached"].stderr
    answer = InspectAnswer.model_validate_json(runs["cached"].stdout)
    assert answer.checkpoint.revision == hub.refs["org/tiny"]["main"]  # type: ignore[attr-defined]
    line = _one_line_error(runs["never"])
    assert "org/never-downloaded" in line and "unreachable" in line
