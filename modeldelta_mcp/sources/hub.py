"""Hugging Face Hub access through huggingface_hub: weights and config only.

Honours HF_TOKEN / --token, HF_HUB_OFFLINE, HF_HOME and HF_ENDPOINT (all read by huggingface_hub).
The revision asked for (branch, tag or commit) is passed to snapshot_download as given, so that the
cache records the ref -> commit mapping and a later offline run finds the same snapshot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.spec import ModelSpec

SAFETENSORS_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
ALWAYS = ["config.json", "adapter_config.json", "quantize_config.json"]
# Exception class names (huggingface_hub moved from requests to httpx) that mean "the hub is out of reach".
_UNREACHABLE = ("ConnectError", "ConnectTimeout", "ConnectionError", "TimeoutException", "Timeout",
                "OfflineModeIsEnabled", "ProxyError")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _unreachable(exc: BaseException) -> bool:
    return any(cls.__name__ in _UNREACHABLE for cls in type(exc).__mro__)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _has_weights(path: Path, patterns: list[str]) -> bool:
    return any(path.glob(p) for p in patterns) or (path / "adapter_config.json").is_file()


def _from_cache(repo: str, revision: str | None, token: str | None) -> Path:
    """The cached snapshot, without network: safetensors first, as an online run would have fetched."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    last: Exception | None = None
    for weights in (SAFETENSORS_PATTERNS, BIN_PATTERNS):
        try:
            path = Path(snapshot_download(repo, revision=revision, allow_patterns=weights + ALWAYS,
                                          local_files_only=True, token=token))
        except LocalEntryNotFoundError as exc:  # includes an incomplete snapshot
            last = exc
            continue
        if _has_weights(path, weights):
            return path
    raise LocalEntryNotFoundError(str(last or "no cached weights"))


def download(model: ModelSpec, token: str | None = None, quiet: bool = True) -> tuple[Path, str]:
    """Download (or find in the cache) a hub spec's weights; return (local dir, commit sha)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars

    if quiet:
        disable_progress_bars()
    spec, repo, revision = model.raw, model.repo_id, model.revision
    if repo is None:
        raise SourceError(f"{spec}: not a hub repo id (org/name[@revision])")
    token = token or os.environ.get("HF_TOKEN") or None
    try:
        if _offline():
            path = _from_cache(repo, revision, token)
            return path, path.name
        try:
            info = HfApi(token=token).model_info(repo, revision=revision, files_metadata=False)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            path = _from_cache(repo, revision, token)  # hub out of reach: a cached snapshot still serves
            return path, path.name
        names = [s.rfilename for s in (info.siblings or [])]
        has_st = any(n.endswith(".safetensors") for n in names)
        has_bin = any(re.fullmatch(r"pytorch_model.*\.bin", n.rsplit("/", 1)[-1]) for n in names)
        if not (has_st or has_bin or "adapter_config.json" in names):
            raise SourceError(f"{spec}: the repo holds no safetensors or pytorch_model*.bin weights")
        patterns = (SAFETENSORS_PATTERNS if has_st else BIN_PATTERNS) + ALWAYS
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns, token=token))
        # The snapshot folder is named after the commit it holds.
        return path, path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else str(info.sha)
    except SourceError:
        raise
    except GatedRepoError as exc:
        raise SourceError(f"{spec}: gated repo, pass --token or set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(f"{spec}: no such repo on the hub (or it is private: pass --token)") from exc
    except RevisionNotFoundError as exc:
        raise SourceError(f"{spec}: no such revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if _offline() else "the hub is unreachable"
        raise SourceError(f"{spec}: not in the local cache and {why}") from exc
    except HfHubHTTPError as exc:
        raise SourceError(f"{spec}: hub request failed ({_first_line(exc)})") from exc
    except Exception as exc:
        if _unreachable(exc) or isinstance(exc, OSError):
            raise SourceError(f"{spec}: hub unreachable ({_first_line(exc)})") from exc
        raise
