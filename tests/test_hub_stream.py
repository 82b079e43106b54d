"""Hub streaming, filters, base inference, claim check and revision pinning, against the local stand-in hub.

Every run is the CLI in a fresh process (tests/_hub_driver.py) with HF_ENDPOINT pointing at the fake hub
and HF_HOME in a tmp dir; bytes are measured at the server (FakeHub.requests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _core_fakehub import FakeHub, files_from_dir
from _hub_repos import LAYERS, QO_GLOBS, TOKEN, Pair, add_repos, llama, write_local

from modeldelta_mcp.models import ComparisonReport

QO = ["--include", QO_GLOBS[0], "--include", QO_GLOBS[1]]
# What a run may fetch above the selected tensors' bytes and the headers (the issue's bound).
FETCH_SLACK_FRACTION = 0.05
FETCH_SLACK_BYTES = 2 * 1024**2


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return write_local(tmp_path_factory.mktemp("hubstream"))


@pytest.fixture(scope="module")
def hub(local: Pair):
    with FakeHub() as fake:
        add_repos(fake, local)
        yield fake


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run(hub: FakeHub, tmp: Path, commands: list[list[str]], **env: str) -> list[Run]:
    full = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "MODELDELTA_CACHE_DIR": str(tmp / "store"),
            "HF_HUB_DISABLE_XET": "1", **env}
    driver = Path(__file__).with_name("_hub_driver.py")
    proc = subprocess.run([sys.executable, str(driver), json.dumps(commands)], capture_output=True, text=True,
                          env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = [Run(r["exit_code"], r["stdout"], r["stderr"]) for r in json.loads(proc.stdout)]
    for r, raw in zip(out, json.loads(proc.stdout), strict=True):
        assert raw["exception"] is None, (raw["argv"], raw["exception"], r.stderr)
    return out


def report_of(r: Run, path: Path) -> ComparisonReport:
    assert r.returncode == 0, r.stderr
    return ComparisonReport.model_validate_json(path.read_text())


def one_line_error(r: Run) -> str:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


# Spectra are solved in batches whose make-up follows thread timing, so they agree to rounding, not bits;
# everything read from the bytes (norms, cosines, sparsity, CRCs of the stored bytes) agrees exactly.
SPECTRUM_RTOL = 1e-5


def numbers(report: ComparisonReport) -> list[tuple]:
    return [(m.name, m.frob_norm, m.cosine_sim, m.sparsity, m.forensics.crc_a, m.forensics.crc_b)
            for m in report.modules]


def same_spectra(x: ComparisonReport, y: ComparisonReport) -> bool:
    return all(m.top_singular_values == n.top_singular_values or torch.allclose(
        torch.tensor(m.top_singular_values), torch.tensor(n.top_singular_values), rtol=SPECTRUM_RTOL, atol=0)
        for m, n in zip(x.modules, y.modules, strict=True))


def selected_bytes(pair: Pair, patterns: list[str]) -> int:
    from fnmatch import fnmatchcase

    from modeldelta_mcp.sources import resolve

    total = 0
    for root in (pair.base, pair.tuned):
        ckpt = resolve(str(root))
        total += sum(t.nbytes for t in ckpt.tensors.values() if any(fnmatchcase(t.name, p) for p in patterns))
    return total


def header_bytes(hub: FakeHub) -> int:
    """Bytes of the header reads (huggingface_hub's first 100 kB, and the reader's 8-byte length prefix)."""
    return sum(r.served for r in hub.requests if "/resolve/" in r.path and (r.range or "").startswith("bytes=0-"))


def test_streamed_comparison_equals_the_local_one(hub: FakeHub, local: Pair, tmp_path: Path) -> None:
    # A 1 MB budget cuts the wide down_proj into column blocks, so the spool path is exercised too.
    small = ["--memory-budget", "1M", "--no-cache", "-q"]
    runs = run(hub, tmp_path, [
        ["org/base", "org/tuned", "--include", "*", *small, "-o", str(tmp_path / "hub.json")],
        [str(local.base), str(local.tuned), *small, "-o", str(tmp_path / "local.json")],
    ])
    streamed, here = report_of(runs[0], tmp_path / "hub.json"), report_of(runs[1], tmp_path / "local.json")
    assert streamed.checkpoints.a.streamed and streamed.checkpoints.b.streamed
    assert not here.checkpoints.b.streamed
    assert numbers(streamed) == numbers(here) and same_spectra(streamed, here)
    assert streamed.diagnostics.method == here.diagnostics.method
    assert streamed.checkpoints.b.revision == hub.repos["org/tuned"].refs["main"]
    # nothing of the shards was kept
    assert not list((tmp_path / "hf_home").rglob("*.safetensors"))
    # bytes_read counts what was fetched: every tensor once, plus each shard's 8-byte length prefix
    shards = len(streamed.checkpoints.a.files) + len(streamed.checkpoints.b.files)
    assert streamed.engine.bytes_read == here.engine.bytes_read + 8 * shards


def test_include_fetches_only_the_selected_tensors(hub: FakeHub, local: Pair, tmp_path: Path) -> None:
    hub.reset_counts()
    (r,) = run(hub, tmp_path, [["org/base", "org/tuned", *QO, "-q", "-o", str(tmp_path / "qo.json")]])
    report = report_of(r, tmp_path / "qo.json")
    assert {m.role for m in report.modules} == {"attn_q", "attn_o"} and len(report.modules) == 2 * LAYERS
    assert report.filters is not None and report.filters.include == [QO[1], QO[3]]
    assert report.filters.n_filtered == len(llama(0)) - 2 * LAYERS
    selected = selected_bytes(local, [QO[1], QO[3]])
    headers = header_bytes(hub)
    served = sum(r.served for r in hub.requests if r.path.endswith(".safetensors"))  # config.json aside
    assert selected <= served - headers <= selected * (1 + FETCH_SLACK_FRACTION) + FETCH_SLACK_BYTES
    assert served - headers == selected  # in fact: exactly the selected bytes, each once
    assert report.engine.bytes_read == selected + sum(8 for r in hub.requests if r.range == "bytes=0-7")
    full = sum(p.stat().st_size for d in (local.base, local.tuned) for p in d.glob("*.safetensors"))
    assert hub.bytes_served < full / 3
    oq = next(f for f in report.diagnostics.findings if f.code == "oq_ratio")
    assert oq.metric_value is not None


def test_server_error_is_retried_and_a_persisting_one_is_one_line(hub: FakeHub, local: Pair, tmp_path: Path) -> None:
    shard = sorted(f for f in hub.repos["org/tuned"].commits[hub.repos["org/tuned"].refs["main"]]
                   if f.endswith(".safetensors"))[0]
    hub.fail_next("org/tuned", shard, 2, 503)
    (ok,) = run(hub, tmp_path, [["org/base", "org/tuned", *QO, "-q", "--no-cache", "-o", str(tmp_path / "r.json")]])
    assert report_of(ok, tmp_path / "r.json").n_tensors == 2 * LAYERS
    assert not hub.failures[("org/tuned", shard)]  # both failures were served, and retried past
    hub.fail_next("org/tuned", shard, 1000, 500)
    (bad,) = run(hub, tmp_path, [["org/base", "org/tuned", *QO, "-q", "--no-cache"]])
    line = one_line_error(bad)
    hub.failures.clear()
    assert shard in line and "500" in line and "retries" in line


def test_gated_and_private_repos_give_a_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    gated, private, private_ok = run(hub, tmp_path, [
        ["org/base", "org/gated", *QO, "-q"],
        ["org/base", "org/private", *QO, "-q"],
        ["org/base", "org/private", *QO, "-q", "--token", TOKEN, "-o", str(tmp_path / "p.json")],
    ])
    assert "org/gated: gated repo" in one_line_error(gated)
    assert "org/private: no such repo on the hub (or it is private" in one_line_error(private)
    assert report_of(private_ok, tmp_path / "p.json").checkpoints.b.streamed


def test_base_inferred_from_card_and_adapter_config(hub: FakeHub, tmp_path: Path) -> None:
    card, adapter, several, none = run(hub, tmp_path, [
        ["org/tuned", *QO, "-q", "-o", str(tmp_path / "card.json")],
        ["org/adapter", "--include", "*.q_proj.*", "-q", "--no-cache", "-o", str(tmp_path / "adapter.json")],
        ["org/twobase", "-q"],
        ["org/nocard", "-q"],
    ])
    by_card = report_of(card, tmp_path / "card.json")
    assert by_card.model_a == "org/base" and by_card.base_inferred is not None
    assert by_card.base_inferred.source == "card" and "model card of org/tuned" in by_card.base_inferred.detail
    by_adapter = report_of(adapter, tmp_path / "adapter.json")
    assert by_adapter.model_a == "org/base" and by_adapter.base_inferred is not None
    assert by_adapter.base_inferred.source == "adapter_config" and by_adapter.checkpoints.a.streamed
    assert by_adapter.diagnostics.method == "lora_adapter"
    claim = next(f for f in by_adapter.diagnostics.findings if f.code == "base_claim")
    assert claim.evidence["claimed_relation"] == "adapter" and claim.evidence["verdict"] == "consistent"
    err = one_line_error(several)
    assert "several" in err and "org/base" in err and "org/other" in err
    assert "no base_model in its model card" in one_line_error(none)


def test_true_and_false_claims_get_their_verdicts(hub: FakeHub, tmp_path: Path) -> None:
    true, false = run(hub, tmp_path, [
        ["org/tuned", *QO, "-q", "-o", str(tmp_path / "true.json")],
        ["org/liar", *QO, "-q", "-o", str(tmp_path / "false.json")],
    ])
    for r, path, verdict in ((true, "true.json", "consistent"), (false, "false.json", "contradicted")):
        diag = report_of(r, tmp_path / path).diagnostics
        claim = next(f for f in diag.findings if f.code == "base_claim")
        assert claim.category == "claim" and diag.method != "base_claim"
        assert claim.evidence["claimed_base"] == "org/base" and claim.evidence["claimed_relation"] == "finetune"
        assert claim.evidence["verdict"] == verdict, claim.detail
        assert isinstance(claim.evidence["mean_cosine_sim"], float)
    liar = report_of(false, tmp_path / "false.json").diagnostics
    assert any(f.code == "unrelated_models" for f in liar.findings)
    assert "unrelated" in next(f for f in liar.findings if f.code == "base_claim").detail


def test_revision_pinning_and_offline(hub: FakeHub, local: Pair, tmp_path: Path) -> None:
    first_sha = hub.repos["org/moving"].refs["main"]
    out = [str(tmp_path / f"{i}.json") for i in range(4)]
    first, again = run(hub, tmp_path, [["org/base", "org/moving", *QO, "-q", "-o", out[0]],
                                       ["org/base", f"org/moving@{first_sha}", *QO, "-q", "-o", out[1]]])
    r0, r1 = report_of(first, Path(out[0])), report_of(again, Path(out[1]))
    assert r0.checkpoints.b.revision == first_sha and r1.report_id == r0.report_id  # pinned: from the store
    moved = hub.move_branch("org/moving", "main", files_from_dir(local.base))
    hub.reset_counts()
    after, pinned = run(hub, tmp_path, [["org/base", "org/moving", *QO, "-q", "-o", out[2]],
                                        ["org/base", f"org/moving@{first_sha}", *QO, "-q", "-o", out[3]]])
    r2, r3 = report_of(after, Path(out[2])), report_of(pinned, Path(out[3]))
    assert r2.checkpoints.b.revision == moved and r2.report_id != r0.report_id
    assert r2.diagnostics.method == "identical"  # main now holds the base's weights: recomputed
    assert r3.report_id == r0.report_id and r3.checkpoints.b.revision == first_sha
    data_reads = [r for r in hub.requests if "/resolve/" in r.path and r.path.split("/")[4] == first_sha
                  and r.range is not None and not r.range.startswith("bytes=0-")]
    assert not data_reads  # the pinned pair came from the store: no tensor bytes fetched
    (offline,) = run(hub, tmp_path, [["org/base", "org/moving", *QO, "-q"]], HF_HUB_OFFLINE="1")
    assert "not in the local cache and HF_HUB_OFFLINE is set" in one_line_error(offline)


def test_inspect_reads_headers_only(hub: FakeHub, tmp_path: Path) -> None:
    from modeldelta_mcp.models import InspectAnswer

    hub.reset_counts()
    (r,) = run(hub, tmp_path, [["inspect", "org/tuned"]])
    assert r.returncode == 0, r.stderr
    answer = InspectAnswer.model_validate_json(r.stdout)
    assert answer.checkpoint.streamed and answer.checkpoint.n_tensors == len(llama(0))
    data = [q for q in hub.requests if q.path.endswith(".safetensors") and q.method == "GET"]
    assert data and all((q.range or "").startswith("bytes=0-") for q in data)  # header reads only


def test_download_flag_keeps_the_shards_and_reads_them_locally(hub: FakeHub, tmp_path: Path) -> None:
    downloaded, offline = [*run(hub, tmp_path, [["org/base", "org/tuned", *QO, "-q", "--download",
                                                 "-o", str(tmp_path / "d.json")]]),
                           *run(hub, tmp_path, [["org/base", "org/tuned", *QO, "-q", "--no-cache",
                                                 "-o", str(tmp_path / "o.json")]], HF_HUB_OFFLINE="1")]
    d = report_of(downloaded, tmp_path / "d.json")
    assert not d.checkpoints.b.streamed and list((tmp_path / "hf_home").rglob("*.safetensors"))
    o = report_of(offline, tmp_path / "o.json")
    assert numbers(o) == numbers(d) and same_spectra(o, d)
