"""Hugging Face Hub access through huggingface_hub: weights and config only, pinned to a commit.

Honours HF_TOKEN / --token, HF_HUB_OFFLINE, HF_HOME and HF_ENDPOINT (all read by huggingface_hub).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from modeldelta_mcp.errors import SourceError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")
SAFETENSORS_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
ALWAYS = ["config.json", "adapter_config.json"]


def looks_like_repo_id(spec: str) -> bool:
    return bool(REPO_ID.match(spec)) and not spec.startswith((".", "/", "~")) and spec.count("/") <= 1


def split_spec(spec: str) -> tuple[str, str | None]:
    repo, _, rev = spec.partition("@")
    return repo, (rev or None)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def download(spec: str, token: str | None = None, quiet: bool = True) -> tuple[Path, str]:
    """Download (or find in the cache) a repo's weights; return (local dir, commit sha)."""
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
    repo, revision = split_spec(spec)
    token = token or os.environ.get("HF_TOKEN") or None
    try:
        if _offline():
            path = snapshot_download(
                repo, revision=revision, allow_patterns=SAFETENSORS_PATTERNS + BIN_PATTERNS + ALWAYS,
                local_files_only=True, token=token,
            )
            return Path(path), Path(path).name
        info = HfApi(token=token).model_info(repo, revision=revision, files_metadata=False)
        names = [s.rfilename for s in (info.siblings or [])]
        has_st = any(n.endswith(".safetensors") for n in names)
        patterns = (SAFETENSORS_PATTERNS if has_st else BIN_PATTERNS) + ALWAYS
        if not has_st and not any(n.endswith(".bin") for n in names):
            if "adapter_config.json" not in names:
                raise SourceError(f"{spec}: the repo holds no safetensors or pytorch_model*.bin weights")
        path = snapshot_download(repo, revision=info.sha, allow_patterns=patterns, token=token)
        return Path(path), str(info.sha)
    except SourceError:
        raise
    except GatedRepoError as exc:
        raise SourceError(f"{spec}: gated repo, pass --token or set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(f"{spec}: no such repo on the hub (or it is private: pass --token)") from exc
    except RevisionNotFoundError as exc:
        raise SourceError(f"{spec}: no such revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        raise SourceError(f"{spec}: not in the local cache and HF_HUB_OFFLINE is set") from exc
    except HfHubHTTPError as exc:
        raise SourceError(f"{spec}: hub request failed ({str(exc).splitlines()[0]})") from exc
    except OSError as exc:
        raise SourceError(f"{spec}: hub unreachable ({str(exc).splitlines()[0]})") from exc
