"""The result store and its single-flight jobs, without a model: a fake compute driven step by step."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.models import (
    CheckpointInfo,
    Checkpoints,
    ComparisonReport,
    Diagnostics,
    EngineInfo,
    Totals,
)
from modeldelta_mcp.progress import Progress, ProgressFn
from modeldelta_mcp.store import JobRunner, PairIdentity, ResultStore, atomic_write_text, check_report_id

RID = "0123456789abcdef"
pytestmark = pytest.mark.timeout(120)


def fake_report(report_id: str = RID) -> ComparisonReport:
    info = CheckpointInfo(source="local", id="/x", files=["model.safetensors"], n_tensors=1, n_params=4,
                          dtypes={"float32": 1})
    return ComparisonReport(
        report_id=report_id, model_a="/x", model_b="/y", checkpoints=Checkpoints(a=info, b=info), n_tensors=1,
        n_skipped=0, skipped=[], modules=[], layers=[],
        totals=Totals(total_delta_norm=0, mean_relative_change=0, mean_cosine_sim=1, mean_effective_rank=None,
                      n_identical=1, n_changed=0),
        diagnostics=Diagnostics(profile_tag="identical", method="identical", summary="s", findings=[]),
        engine=EngineInfo(version="0", spectrum="exact", top_k=20, device="cpu", seconds=0, bytes_read=0),
    )


class Steps:
    """A compute that reports N tensors, each released by the test (so joins and cancels are deterministic)."""

    def __init__(self, n: int = 5, report_id: str = RID) -> None:
        self.n, self.report_id = n, report_id
        self.gate = threading.Semaphore(0)
        self.calls = 0
        self.stopped_at: int | None = None

    def __call__(self, progress: ProgressFn, cancel: threading.Event) -> ComparisonReport:
        self.calls += 1
        for i in range(self.n):
            while not self.gate.acquire(timeout=0.01):
                if cancel.is_set():
                    self.stopped_at = i
                    raise ModelDeltaError("comparison cancelled")
            progress(Progress(i + 1, self.n, f"t{i}", i + 1, self.n))
        return fake_report(self.report_id)

    def release(self, k: int = 1) -> None:
        for _ in range(k):
            self.gate.release()


# ---- ResultStore ------------------------------------------------------------------------------------


def test_put_get_and_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.get(RID) is None
    store.put(fake_report())
    assert store.get(RID) == fake_report()
    path = tmp_path / "reports" / f"{RID}.json"
    path.write_text(path.read_text()[:50])
    assert store.get(RID) is None
    path.write_text(json.dumps({"report_id": RID}))  # valid JSON, wrong shape
    assert store.get(RID) is None


def test_atomic_write_leaves_no_temp_file_and_keeps_the_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "d" / "x.json"
    atomic_write_text(target, "one")
    with pytest.raises(TypeError):
        atomic_write_text(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
    assert target.stat().st_mode & 0o044, "written with mkstemp's 0600 instead of the umask's mode"


def test_report_ids_are_validated_before_they_touch_a_path(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for bad in ("../../etc/passwd", "0123456789ABCDEF", "abc", ""):
        with pytest.raises(ModelDeltaError, match="report_id"):
            store.get(bad)
        with pytest.raises(ModelDeltaError):
            check_report_id(bad)


def test_a_pair_identity_keys_only_the_options_that_change_the_numbers() -> None:
    pair = PairIdentity("a" * 64, "b" * 64)
    base = pair.report_id({"top_k": 20, "spectrum": "exact", "device": "cpu", "memory_budget": 1})
    assert base == pair.report_id({"top_k": 20, "spectrum": "exact", "device": "cuda", "memory_budget": 2})
    assert check_report_id(base) == base == pair.key({"top_k": 20, "spectrum": "exact"})[:16]
    assert base != pair.report_id({"top_k": 50, "spectrum": "exact"})
    assert base != PairIdentity("b" * 64, "a" * 64).report_id({"top_k": 20, "spectrum": "exact"})
    assert pair.pair_key != PairIdentity("b" * 64, "a" * 64).pair_key and len(pair.pair_key) == 16


# ---- JobRunner ----------------------------------------------------------------------------------------

async def _until(cond: Callable[[], bool]) -> None:
    with anyio.fail_after(120):  # generous: only a hang should trip it on a loaded CI machine
        while not cond():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_the_compute_log_records_each_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("MODELDELTA_COMPUTE_LOG", str(log))
    async with anyio.create_task_group() as tg:
        runner = JobRunner(ResultStore(tmp_path), tg, cancel_grace=0)
        await runner.run(RID, lambda p, c: fake_report())
        await runner.run(RID, lambda p, c: pytest.fail("recomputed"))
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [[RID, "start"], [RID, "done"]]


@pytest.mark.anyio
async def test_a_job_that_does_not_persist_neither_reads_nor_writes_the_store(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    first, second = Steps(n=2), Steps(n=2)
    first.release(2)
    second.release(2)
    async with anyio.create_task_group() as tg:
        runner = JobRunner(store, tg, cancel_grace=0)
        assert await runner.run(RID, first, persist=False) == fake_report()
        assert store.get(RID) is None, "written to the store"
        store.put(fake_report())
        assert await runner.run(RID, second, persist=False) == fake_report()
    assert first.calls == second.calls == 1 and store.computations == 2


@pytest.mark.anyio
async def test_identical_jobs_run_once_and_every_waiter_sees_progress(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    steps = Steps(n=4)
    seen: dict[int, list[Progress]] = {0: [], 1: []}
    results: list[ComparisonReport] = []
    async with anyio.create_task_group() as tg:
        runner = JobRunner(store, tg, cancel_grace=0)

        async def waiter(k: int) -> None:
            async def sink(p: Progress) -> None:
                seen[k].append(p)

            results.append(await runner.run(RID, steps, sink))

        async with anyio.create_task_group() as calls:
            calls.start_soon(waiter, 0)
            calls.start_soon(waiter, 1)
            await _until(lambda: runner.running(RID) is not None and runner.running(RID).waiters == 2)
            steps.release(4)
    assert steps.calls == 1 and len(results) == 2 and results[0] == results[1]
    assert seen[0] and seen[1] and seen[0][-1].done == seen[1][-1].done == 4
    assert store.get(RID) == fake_report()


async def _abandoned(tmp_path: Path, cancel_grace: float, gives_up_after: float) -> tuple[Steps, JobRunner]:
    """The only waiter of a 5-step job (never released) gives up after `gives_up_after` s; returns once the job
    has stopped."""
    steps = Steps(n=5)
    async with anyio.create_task_group() as tg:
        runner = JobRunner(ResultStore(tmp_path), tg, cancel_grace=cancel_grace)
        with anyio.move_on_after(gives_up_after):
            await runner.run(RID, steps)
        await _until(lambda: steps.stopped_at is not None)
    return steps, runner


@pytest.mark.anyio
async def test_a_cancelled_waiter_stops_the_job_without_grace(tmp_path: Path) -> None:
    steps, _ = await _abandoned(tmp_path, cancel_grace=0, gives_up_after=0.3)
    assert steps.stopped_at == 0 and ResultStore(tmp_path).get(RID) is None


@pytest.mark.anyio
async def test_within_the_grace_a_new_request_joins_the_abandoned_job(tmp_path: Path) -> None:
    steps = Steps(n=5)
    async with anyio.create_task_group() as tg:
        runner = JobRunner(ResultStore(tmp_path), tg, cancel_grace=60)
        with anyio.move_on_after(0.2):  # the client gives up
            await runner.run(RID, steps)
        job = runner.running(RID)
        assert job is not None and job.waiters == 0 and not job.cancel.is_set()
        steps.release(2)
        await _until(lambda: job.latest is not None and job.latest.done == 2)
        later: list[Progress] = []

        async def sink2(p: Progress) -> None:
            later.append(p)

        async with anyio.create_task_group() as again:
            again.start_soon(lambda: runner.run(RID, Steps(), sink2))  # a different compute must not run
            await _until(lambda: bool(later))
            steps.release(3)
    assert steps.calls == 1 and later[0].done == 2 and later[-1].done == 5


@pytest.mark.anyio
async def test_an_abandoned_job_is_cancelled_after_the_grace(tmp_path: Path) -> None:
    _, runner = await _abandoned(tmp_path, cancel_grace=0.2, gives_up_after=0.1)
    assert runner.running(RID) is None


@pytest.mark.anyio
async def test_a_failed_job_fails_every_waiter_and_the_next_call_starts_afresh(tmp_path: Path) -> None:
    def broken(progress: ProgressFn, cancel: threading.Event) -> ComparisonReport:
        raise ModelDeltaError("/m/model.safetensors: not a readable safetensors file")

    async with anyio.create_task_group() as tg:
        runner = JobRunner(ResultStore(tmp_path), tg, cancel_grace=0)
        with pytest.raises(ModelDeltaError, match="not a readable"):
            await runner.run(RID, broken)
        assert await runner.run(RID, lambda p, c: fake_report()) == fake_report()


def test_the_store_imports_nothing_from_the_pipeline() -> None:
    import ast

    import modeldelta_mcp.store as store_pkg

    pipeline = ("modeldelta_mcp.compare", "modeldelta_mcp.engine", "modeldelta_mcp.sources", "modeldelta_mcp.diagnosis",
                "modeldelta_mcp.align", "modeldelta_mcp.service")
    for path in Path(store_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad = [n for n in names if n.startswith(pipeline)]
            assert not bad, f"store/{path.name} imports {bad}: the store takes keys and plain data"
