"""The Ray executor on a local Ray instance (two workers): the same reports as the local engine, a killed
worker retried, a tensor that keeps failing reported. Skipped only where Ray cannot start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _many_faults import FailingCheckpoint, failing
from _many_models import Family
from test_many_engine import assert_same_modules

from modeldelta_mcp.align import align
from modeldelta_mcp.compare import ResolvedPair, compare
from modeldelta_mcp.engine import EngineOptions
from modeldelta_mcp.engine.many import Candidate
from modeldelta_mcp.engine.run import THREADS_ENV
from modeldelta_mcp.errors import ModelDeltaError
from modeldelta_mcp.selection.executors import LocalExecutor
from modeldelta_mcp.sources import resolve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WORKERS = 2
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dead-worker drill's marker: present = disarmed; a test deletes it to kill the next task's worker."""
    marker = tmp_path_factory.mktemp("ray-drill") / "killed"
    marker.touch()
    return marker


@pytest.fixture(scope="module")
def ray_executor(drill: Path) -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modeldelta-mcp[ray]')")
    from modeldelta_mcp.selection.ray_executor import TEST_KILL_ENV, RayExecutor

    # Workers import the package and the tests' helpers (a failing checkpoint travels to them).
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    try:
        ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": path, TEST_KILL_ENV: str(drill)}})
    except Exception as exc:  # no shared memory, no ports...: the only reason to skip
        pytest.skip(f"a local Ray instance cannot start here: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    try:
        yield RayExecutor()
    finally:
        ray.shutdown()


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local engine at the Ray tasks' torch thread count (one), for like-for-like numbers."""
    monkeypatch.setenv(THREADS_ENV, "1")


def test_ray_comparison_matches_the_local_engine(minilm_family: Family, ray_executor, one_thread: None) -> None:
    pair = ResolvedPair(resolve(str(minilm_family.base)), resolve(str(minilm_family.pruned)))
    local = compare(pair, EngineOptions())
    spread = compare(pair, EngineOptions(), executor=ray_executor)  # type: ignore[arg-type]
    assert_same_modules(local.modules, spread.modules)
    assert spread.diagnostics == local.diagnostics and spread.diagnostics.method == "pruning"
    assert spread.report_id == local.report_id
    e = spread.engine
    assert (e.executor, e.workers, e.retries) == ("ray", WORKERS, 0)
    assert e.tasks >= WORKERS and e.bytes_read == local.engine.bytes_read
    assert local.engine.executor == "local" and local.engine.tasks == 1


def test_ray_survives_a_killed_worker(minilm_family: Family, ray_executor, drill: Path, one_thread: None) -> None:
    pair = ResolvedPair(resolve(str(minilm_family.base)), resolve(str(minilm_family.finetune)))
    local = compare(pair, EngineOptions())
    drill.unlink()  # armed: the first task to start kills its own worker process
    spread = compare(pair, EngineOptions(), executor=ray_executor)  # type: ignore[arg-type]
    assert drill.exists(), "the drill never fired"
    assert spread.engine.retries >= 1
    assert_same_modules(local.modules, spread.modules)
    assert spread.diagnostics.method == "full_finetune"


def test_ray_reports_a_tensor_that_keeps_failing(minilm_family: Family, ray_executor) -> None:
    base = resolve(str(minilm_family.base))
    bad = failing(resolve(str(minilm_family.finetune)))
    with pytest.raises(ModelDeltaError, match=FailingCheckpoint.bad_tensor) as err:
        compare(ResolvedPair(base, bad), EngineOptions(spectrum="off"), executor=ray_executor)  # type: ignore[arg-type]
    assert "1 tensor(s) failed" in str(err.value)


def test_ray_many_candidates_match_the_local_pass(minilm_family: Family, ray_executor, one_thread: None) -> None:
    base = resolve(str(minilm_family.base))
    cands = [resolve(str(p)) for p in minilm_family.candidates.values()]
    bad = failing(resolve(str(minilm_family.sibling)))
    work = [Candidate(c, align(base, c).pairs) for c in [*cands, bad]]
    local, _ = LocalExecutor().run_many(base, work, EngineOptions())
    spread, split = ray_executor.run_many(base, work, EngineOptions())  # type: ignore[attr-defined]
    assert (split.executor, split.workers, split.tasks) == ("ray", WORKERS, WORKERS)
    for here, there in zip(local.results[:-1], spread.results[:-1], strict=True):
        assert here.modules is not None and there.modules is not None
        assert_same_modules(here.modules, there.modules)
    assert spread.results[-1].modules is None
    assert spread.results[-1].error == local.results[-1].error == f"{FailingCheckpoint.bad_tensor}: unreadable (test)"
    # each worker reads the base once for its group of candidates
    assert spread.base_reads == WORKERS * local.base_reads


def test_ray_compare_many_and_find_base_through_the_service(minilm_family: Family, ray_executor,
                                                             tmp_path: Path) -> None:
    import anyio

    from modeldelta_mcp.selection.many import compare_many, find_base
    from modeldelta_mcp.service import ReportService
    from modeldelta_mcp.store import ResultStore

    fam = minilm_family
    options = EngineOptions(spectrum="off")

    async def run() -> tuple:
        async with ReportService.open(ResultStore(tmp_path / "cache"), executor=ray_executor) as service:
            many = await compare_many(service, str(fam.base), [str(fam.fp16), str(fam.pruned), str(fam.corrupt)],
                                      options, executor=ray_executor)
            stored = await service.report_for_pair(str(fam.base), str(fam.pruned), options)
            found = await find_base(service, str(fam.finetune), [str(fam.other_init), str(fam.base)], options,
                                    executor=ray_executor)
            return many, stored, found

    many, stored, found = anyio.run(run)
    assert [r.method for r in many.rows] == ["precision_change", "pruning", None]
    assert many.rows[2].error is not None and "model.safetensors" in many.rows[2].error
    assert (many.engine.executor, many.engine.workers, many.engine.tasks) == ("ray", WORKERS, WORKERS)
    assert stored.report_id == many.rows[1].report_id
    assert (stored.engine.executor, stored.engine.candidates_in_pass) == ("ray", 2)
    assert found.decision == "found" and found.base == str(fam.base) and found.engine.executor == "ray"
