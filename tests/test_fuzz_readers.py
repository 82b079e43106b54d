"""Fuzz campaign over every reader: thousands of mutated files, at a fixed seed, through the public entry points.

Each case (tests/_fuzz_mutate.py) mutates one file of a real small checkpoint: safetensors header and data,
sharded index JSON, config.json, adapter_config.json, `.bin` pickles (zip and legacy) loaded weights-only,
and a Q8_0 GGUF file (header counts and 64-bit lengths made huge).
A worker process (tests/_fuzz_worker.py) inspects and compares each case against its unmutated seed; this
module watches it from outside, so a hang (no answer within CASE_TIMEOUT_S) or a crash of native code is
pinned to its case and the campaign goes on. Contract: every case either succeeds or raises the project's
one error type with one line of at most 200 characters naming the file; resident memory stays flat.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _fuzz_mutate import KINDS
from _fuzz_seeds import build_seeds
from _fuzz_worker import MAX_MESSAGE, message_problem

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import resolve

SEED = 20261130
# 11 kinds x 250: 2,750 mutated files, about 30 s of one core (a few ms per case).
CASES_PER_KIND = 250
# A case takes milliseconds; this only has to outlast a machine shared with other jobs.
CASE_TIMEOUT_S = 60.0
# Peak RSS of the worker may grow this much over the first case's: a header that made a reader allocate
# what it claims (GBs) would blow far past it.
RSS_GROWTH_LIMIT_MB = 200


@pytest.fixture(scope="module")
def seeds() -> Iterator[dict[str, Path]]:
    # A short scratch path: error messages name it and must stay within 200 characters.
    root = Path(tempfile.mkdtemp(prefix="mdfz-"))
    try:
        yield build_seeds(root / "s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _worker(plan: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("_fuzz_worker.py")), json.dumps(plan)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _pump(proc: subprocess.Popen, lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def run_campaign(seeds: dict[str, Path], scratch: Path, cases_per_kind: int) -> tuple[list[dict], list[dict]]:
    """All cases of every kind; returns (results, failures). A hung or dead worker is replaced after its case."""
    results: list[dict] = []
    failures: list[dict] = []
    todo = [[kind, 0, cases_per_kind] for kind in KINDS]
    while todo:
        kind, start, _ = todo[0]
        plan = {"seeds": {k: str(v) for k, v in seeds.items()}, "scratch": str(scratch), "seed": SEED,
                "runs": todo}
        proc = _worker(plan)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        expect = (kind, start)
        stalled = None
        while True:
            try:
                line = lines.get(timeout=CASE_TIMEOUT_S)
            except queue.Empty:
                stalled = "hang"
                break
            if line is None:
                stalled = None if not todo else f"worker died (exit {proc.wait()}): {proc.stderr.read()[-300:]}"  # type: ignore[union-attr]
                break
            row = json.loads(line)
            results.append(row)
            if row["outcome"] not in ("ok", "error"):
                failures.append(row)
            # Advance the plan past this case.
            k, s, c = todo[0]
            todo[0] = [k, s + 1, c - 1]
            if c - 1 == 0:
                todo.pop(0)
            expect = (todo[0][0], todo[0][1]) if todo else None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if stalled and expect is not None:  # the case the worker was on
            failures.append({"kind": expect[0], "i": expect[1], "outcome": stalled})
            results.append(failures[-1])
            k, s, c = todo[0]
            todo[0] = [k, s + 1, c - 1]
            if c - 1 == 0:
                todo.pop(0)
    return results, failures


def test_fuzz_campaign_every_reader(seeds: dict[str, Path], tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="mdfz-"))
    try:
        results, failures = run_campaign(seeds, scratch, CASES_PER_KIND)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    by_kind = {k: sum(1 for r in results if r["kind"] == k) for k in KINDS}
    refused = sum(1 for r in results if r["outcome"] == "error")
    rss = [r["rss_mb"] for r in results if "rss_mb" in r]
    growth = max(rss) - rss[0]
    print(f"\nfuzz: {len(results)} mutated files tried ({refused} refused with a one-line error, "
          f"{len(results) - refused - len(failures)} read), {len(failures)} failures, worker peak RSS "
          f"{max(rss)} MB (+{growth} MB over the first case)")
    shown = "\n".join(f"{f['kind']}#{f['i']} {f['outcome']}: {f.get('problem') or ''} {f.get('msg', '')[:300]} "
                      f"[{f.get('how', '')}]" for f in failures[:20])
    assert not failures, f"{len(failures)} of {len(results)} cases broke the contract:\n{shown}"
    assert all(n == CASES_PER_KIND for n in by_kind.values()), by_kind
    assert growth <= RSS_GROWTH_LIMIT_MB, f"worker RSS grew {growth} MB"


# ---- pinned cases: a petabyte claimed, a library's long message, a shard outside the checkpoint -----------


def _check(exc: SourceError, path: Path) -> str:
    msg = str(exc)
    assert message_problem(msg, path.parent) is None, msg
    return msg


def _safetensors_with_header(path: Path, header: dict, payload: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)


def test_safetensors_header_claiming_a_petabyte_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _safetensors_with_header(path, {"w": {"dtype": "F32", "shape": [2**25, 2**25], "data_offsets": [0, 2**52]}},
                             b"\0" * 64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SourceError) as err:
        resolve(str(path))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KB: nothing allocated
    _check(err.value, path)


def test_torch_pickle_claiming_a_petabyte_is_refused_before_reading(tmp_path: Path) -> None:
    """A stride-0 view lets a pickle claim any size over a tiny storage; the claim is checked against the file."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(1).expand(2**25, 2**25)}, path)
    with pytest.raises(SourceError) as err:
        resolve(str(path))
    msg = _check(err.value, path)
    assert "claims" in msg and "tensor w" in msg


def test_a_library_message_listing_every_dtype_is_cut_to_what_matters(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _safetensors_with_header(path, {"w": {"dtype": "XYZ", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(SourceError) as err:
        resolve(str(path))
    msg = _check(err.value, path)
    assert "unknown dtype `XYZ`" in msg and "expected one of" not in msg and len(msg) <= MAX_MESSAGE


def test_a_corrupt_zip_checkpoint_gets_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(4)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as err:
        resolve(str(path))
    msg = _check(err.value, path)
    assert "miniz" not in msg and "zip archive" in msg


def test_a_shard_index_pointing_outside_the_checkpoint_is_refused(tmp_path: Path, seeds: dict[str, Path]) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(seeds["st_sharded"], root)
    index = root / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    first = next(iter(doc["weight_map"]))
    doc["weight_map"][first] = "../../outside/model.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(SourceError) as err:
        resolve(str(root))
    assert "outside the checkpoint directory" in _check(err.value, index)


def test_a_zip_pickle_refusing_globals_names_the_global(tmp_path: Path) -> None:
    """weights_only holds: a pickle calling a global is refused, nothing runs, and the line says which global."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as src:
        infos = [(i, src.read(i)) for i in src.infolist()]
    out = tmp_path / "evil" / "pytorch_model.bin"
    out.parent.mkdir()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info, body in infos:
            if info.filename.endswith("data.pkl"):
                body = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueR."
            dst.writestr(info, body)
    with pytest.raises(SourceError) as err:
        resolve(str(out))
    msg = _check(err.value, out)
    assert "posix.system" in msg and "nothing was executed" in msg
