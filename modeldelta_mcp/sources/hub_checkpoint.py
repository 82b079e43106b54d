"""A hub spec as a Checkpoint: read from the cache, downloaded, or streamed by range reads.

Streaming (sources/remote.py) is chosen when a filter selects a subset of the tensors or when the free disk
under the hub cache is short of the weight shards; `download=True` always downloads the snapshot (which
stays in the hub cache for later runs). A commit already in the cache is read from there. Offline
(HF_HUB_OFFLINE=1), only the cache answers. Adapter repos and .bin-only repos are small or not rangeable:
they are downloaded. The spec resolves to a commit sha first, and every later read names that sha, so a
branch that moves during a run cannot mix two commits.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources import hub
from modeldelta_mcp.sources.checkpoint import Checkpoint
from modeldelta_mcp.sources.formats import detect
from modeldelta_mcp.sources.jsonfile import read_json_object
from modeldelta_mcp.sources.spec import ModelSpec

# Download only when the shards fit with this share of the free disk to spare (the cache's own files,
# temporary .incomplete downloads and the user's other work).
DISK_HEADROOM = 0.10


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def short_of_disk(info: hub.HubInfo) -> bool:
    from huggingface_hub import constants

    need = info.weight_bytes(hub.SAFETENSORS_PATTERNS)
    return need * (1 + DISK_HEADROOM) > _free_bytes(Path(constants.HF_HUB_CACHE))


def _with_card(ckpt: Checkpoint, info: hub.HubInfo | None) -> Checkpoint:
    if info is not None and info.card:
        ckpt.card = info.card
    return ckpt


def _from_dir(spec: str, root: Path, sha: str, base: Checkpoint | None) -> Checkpoint:
    fmt, root, files = detect(root)
    return fmt.load(spec, root, files, "hub", revision=sha, base=base)


def hub_checkpoint(model: ModelSpec, token: str | None = None, quiet: bool = True, base: Checkpoint | None = None,
                   subset: bool = False, download: bool = False) -> Checkpoint:
    """`subset`: a filter leaves tensors out (streaming pays only for the rest)."""
    spec = model.raw
    token = token or os.environ.get("HF_TOKEN") or None
    if hub.offline() or download:
        root, sha = hub.download(model, token=token, quiet=quiet)
        return _from_dir(spec, root, sha, base)
    try:
        info = hub.hub_info(model, token)
    except SourceError as exc:
        if exc.__cause__ is None or not hub.unreachable(exc.__cause__):
            raise
        root, sha = hub.download(model, token=token, quiet=quiet)  # out of reach: a cached snapshot serves
        return _from_dir(spec, root, sha, base)
    cached = hub.cached_snapshot(info, token)
    if cached is not None:
        return _with_card(_from_dir(spec, cached, info.sha, base), info)
    streamed = None
    if not info.is_adapter and info.has_safetensors and (subset or short_of_disk(info)):
        streamed = _stream(spec, info, token, quiet)
    if streamed is None:
        # As given (not the sha), so the cache records the branch -> commit mapping for offline runs.
        root, sha = hub.download(model, token=token, quiet=quiet)
        return _with_card(_from_dir(spec, root, sha, base), info)
    return _with_card(streamed, info)


def _stream(spec: str, info: hub.HubInfo, token: str | None, quiet: bool) -> Checkpoint | None:
    """The remote checkpoint, or None when the repo's safetensors are not laid out for header reads
    (no model.safetensors or index: then it is downloaded)."""
    from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

    from modeldelta_mcp.sources.remote import remote_checkpoint

    config = None
    with hub.hub_errors(spec):
        if "config.json" in info.files:
            config = read_json_object(hub.fetch_side_file(info.repo, info.sha, "config.json", token))
        try:
            return remote_checkpoint(spec, info.repo, info.sha, token, config, quiet=quiet)
        except NotASafetensorsRepoError:
            return None
        except SafetensorsParsingError as exc:
            raise SourceError(f"{spec}: unreadable safetensors header ({hub.first_line(exc)})") from exc
