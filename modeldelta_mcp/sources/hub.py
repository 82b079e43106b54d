"""Hugging Face Hub access through huggingface_hub: weights and config only.

Honours HF_TOKEN / --token, HF_HUB_OFFLINE, HF_HOME and HF_ENDPOINT (all read by huggingface_hub).
The revision asked for (branch, tag or commit) is passed to snapshot_download as given, so that the
cache records the ref -> commit mapping and a later offline run finds the same snapshot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.spec import ModelSpec, split_spec

SAFETENSORS_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
# Side files the formats read beside the weights: AutoGPTQ's scheme and optimum-quanto's quantization maps
# (sources/quantized/__init__.py SIDE_CONFIGS).
ALWAYS = ["config.json", "adapter_config.json", "quantize_config.json", "quantization_map.json", "quanto_qmap.json"]
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# Exception class names (huggingface_hub moved from requests to httpx) that mean "the hub is out of reach".
_UNREACHABLE = ("ConnectError", "ConnectTimeout", "ConnectionError", "TimeoutException", "Timeout",
                "OfflineModeIsEnabled", "ProxyError")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def unreachable(exc: BaseException) -> bool:
    return any(cls.__name__ in _UNREACHABLE for cls in type(exc).__mro__)


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _has_weights(path: Path, patterns: list[str]) -> bool:
    """A weight file itself (an index or config alone, fetched for headers, does not count)."""
    weights = [p for p in patterns if not p.endswith(".json")] + list(ADAPTER_WEIGHTS)
    return any(next(path.glob(p), None) is not None for p in weights)


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


@contextmanager
def hub_errors(spec: str) -> Iterator[None]:
    """huggingface_hub's exceptions as one-line SourceErrors naming the spec."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except SourceError:
        raise
    except GatedRepoError as exc:
        raise SourceError(f"{spec}: gated repo, pass --token or set HF_TOKEN with access to it") from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(f"{spec}: no such repo on the hub (or it is private: pass --token)") from exc
    except RevisionNotFoundError as exc:
        raise SourceError(f"{spec}: no such revision {split_spec(spec)[1]!r}") from exc
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub is unreachable"
        raise SourceError(f"{spec}: not in the local cache and {why}") from exc
    except HfHubHTTPError as exc:
        raise SourceError(f"{spec}: hub request failed ({first_line(exc)})") from exc
    except Exception as exc:
        if unreachable(exc) or isinstance(exc, OSError):
            raise SourceError(f"{spec}: hub unreachable ({first_line(exc)})") from exc
        raise


@dataclass(frozen=True)
class HubInfo:
    """What the hub says about a spec at one commit (no file content)."""

    repo: str
    sha: str
    files: dict[str, int | None]  # file name -> size in bytes (None when the hub did not say)
    card: dict[str, Any] | None  # the model card's metadata (base_model, base_model_relation...)

    @property
    def has_safetensors(self) -> bool:
        return any(n.endswith(".safetensors") for n in self.files)

    @property
    def is_adapter(self) -> bool:
        return "adapter_config.json" in self.files

    def weight_bytes(self, patterns: list[str]) -> int:
        return sum(size or 0 for name, size in self.files.items() if any(fnmatch(name, p) for p in patterns))


def hub_info(model: ModelSpec, token: str | None = None) -> HubInfo:
    """model_info at the spec's revision: the commit sha, file sizes and the card metadata."""
    from huggingface_hub import HfApi

    spec, repo, revision = model.raw, model.repo_id, model.revision
    if repo is None:
        raise SourceError(f"{spec}: not a hub repo id (org/name[@revision])")
    with hub_errors(spec):
        info = HfApi(token=token).model_info(repo, revision=revision, files_metadata=True, token=token)
    card = info.card_data.to_dict() if info.card_data is not None else None
    return HubInfo(repo=repo, sha=str(info.sha), files={s.rfilename: s.size for s in (info.siblings or [])},
                   card=card)


def cached_snapshot(info: HubInfo, token: str | None) -> Path | None:
    """The cached snapshot of this commit when it holds every weight file the hub lists for it, else None
    (header reads leave an index and config.json there: a partial snapshot)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = _from_cache(info.repo, info.sha, token)
    except (LocalEntryNotFoundError, OSError):
        return None
    patterns = SAFETENSORS_PATTERNS if info.has_safetensors else BIN_PATTERNS
    needed = [n for n in info.files if any(fnmatch(n, p) for p in [*patterns, *ADAPTER_WEIGHTS])]
    return path if needed and all((path / n).is_file() for n in needed) else None


def fetch_side_file(repo: str, sha: str, filename: str, token: str | None) -> Path:
    """A small side file (config.json, adapter_config.json) through the hub cache."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, filename, revision=sha, token=token))


def download(model: ModelSpec, token: str | None = None, quiet: bool = True) -> tuple[Path, str]:
    """Download (or find in the cache) a hub spec's weights; return (local dir, commit sha)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    if quiet:
        disable_progress_bars()
    spec, repo, revision = model.raw, model.repo_id, model.revision
    if repo is None:
        raise SourceError(f"{spec}: not a hub repo id (org/name[@revision])")
    token = token or os.environ.get("HF_TOKEN") or None
    with hub_errors(spec):
        if offline():
            path = _from_cache(repo, revision, token)
            return path, path.name
        try:
            info = HfApi(token=token).model_info(repo, revision=revision, files_metadata=False)
        except Exception as exc:
            if not unreachable(exc):
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
