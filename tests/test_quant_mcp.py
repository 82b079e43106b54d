"""A bare .gguf path as a model spec of the MCP tools (stdio, the installed console script)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _mcp_checks import call, ok
from _mcp_helpers import CALL_TIMEOUT_S, server_env, server_script
from _quant_gguf import hf_config, write_gguf
from mcp import Client, StdioServerParameters

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("quant-mcp")
    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(root / "base"))
    gguf_path = write_gguf(root / "base", root / "base-Q8_0.gguf", "qwen2", hf_config(root / "base"), "Q8_0")
    return root / "base", gguf_path


async def test_gguf_file_is_a_model_spec(pair: tuple[Path, Path], tmp_path: Path, anyio_backend: str) -> None:
    base, gguf_path = pair
    env = server_env(tmp_path / "cache", tmp_path / "compute.log")
    params = StdioServerParameters(command=server_script(), args=["--allow-path", str(base.parent)], env=env,
                                   cwd=str(tmp_path))
    async with Client(params, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        answer = ok(await call(client, "inspect_checkpoint", {"model": str(gguf_path)}), "inspect_checkpoint")
        assert answer["checkpoint"]["format"] == "gguf"
        assert answer["checkpoint"]["quantization"][0]["declared_scheme"] == "Q8_0"
        summary = ok(await call(client, "compare_checkpoints", {"model_a": str(base), "model_b": str(gguf_path)}),
                     "compare_checkpoints")
        assert summary["diagnostics"]["method"] == "quantization_roundtrip"
        assert summary["counts"]["n_skipped"] == 0
