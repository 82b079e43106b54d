"""Hub safetensors read in place: headers through huggingface_hub, each tensor's bytes by HTTP range read.

The index comes from `HfApi.get_safetensors_metadata` (one ranged GET per shard header). Tensor bytes are
fetched with huggingface_hub's own helpers (`hf_hub_url`, `build_hf_headers`, `http_backoff`,
`hf_raise_for_status`): the token, HF_ENDPOINT, HF_HUB_OFFLINE, redirects and retries with backoff are
theirs. Nothing is written to the hub cache except config.json; shard bytes live only as long as the
engine needs them (a window of the tensor being read, or a temporary spool file for a column-blocked one).

Only the bytes of the tensors the engine asks for are requested, each once: row reads take the next
window of the same tensor (never its neighbours), so a subset costs its own bytes plus the headers.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader, TensorRef, dtype_size
from modeldelta_mcp.sources.formats import WeightFormat
from modeldelta_mcp.sources.hub import first_line
from modeldelta_mcp.sources.safetensors_files import _ST_DTYPES as ST_DTYPES

# Bytes requested per range read of one tensor: large enough that request latency is amortised on a real
# hub (a resolve URL redirects to a CDN), small enough that a reader's window is noise next to the engine's
# memory budget. Never extends past the tensor's own bytes, so it fetches nothing the engine won't read.
RANGE_WINDOW = 16 * 1024**2
# huggingface_hub's defaults (http_backoff): retried on 429/5xx and connection errors, 1 s doubling to 8 s.
RANGE_RETRIES = 5
RETRY_BASE_WAIT_S = 1.0
# A safetensors file starts with the header length as a little-endian u64.
HEADER_PREFIX = 8
REMOTE_FORMAT = "remote-safetensors"


def _failure(exc: BaseException) -> str:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return "gated repo, pass --token or set HF_TOKEN with access to it"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repo, or it is private (pass --token)"
    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    if status is None or status == 429 or status >= 500:  # what http_backoff retries
        return f"range read failed after {RANGE_RETRIES} retries ({first_line(exc)})"
    return f"range read failed ({first_line(exc)})"


@dataclass
class RemoteFiles:
    """The shards of one hub commit, read by byte range; counts what it fetched."""

    repo: str
    sha: str
    token: str | None
    offsets: dict[str, tuple[int, int]]  # tensor name -> [begin, end) in its file's data section
    fetched: int = 0
    _data_start: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, filename: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of a file (absolute offsets), in one ranged GET."""
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

        url = hf_hub_url(self.repo, filename, revision=self.sha, endpoint=constants.ENDPOINT)
        headers = build_hf_headers(token=self.token)
        headers["Range"] = f"bytes={start}-{stop - 1}"
        where = f"{self.repo}@{self.sha[:12]}/{filename} bytes {start}-{stop - 1}"
        try:
            response = http_backoff("GET", url, headers=headers, max_retries=RANGE_RETRIES,
                                    base_wait_time=RETRY_BASE_WAIT_S, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT)
            hf_raise_for_status(response)
        except Exception as exc:
            raise SourceError(f"{where}: {_failure(exc)}") from exc
        data = response.content
        with self._lock:
            self.fetched += len(data)
        if response.status_code != 206 or len(data) != stop - start:
            raise SourceError(f"{where}: the server answered {response.status_code} with {len(data)} bytes "
                              "(no byte-range support); pass --download")
        return data

    def data_start(self, filename: str) -> int:
        with self._lock:
            known = self._data_start.get(filename)
        if known is None:
            n = int.from_bytes(self.read(filename, 0, HEADER_PREFIX), "little")
            known = HEADER_PREFIX + n
            with self._lock:
                self._data_start[filename] = known
        return known

    def tensor_range(self, ref: TensorRef) -> tuple[int, int]:
        begin, end = self.offsets[ref.name]
        base = self.data_start(ref.file)
        return base + begin, base + end


def _quiet_retries() -> None:
    """huggingface_hub logs every retry as a warning; the outcome is reported once, as a SourceError."""
    logging.getLogger("huggingface_hub.utils._http").setLevel(logging.ERROR)


def remote_index(repo: str, sha: str, token: str | None) -> tuple[list[str], dict[str, TensorRef], RemoteFiles]:
    """The tensor index of a hub commit from its safetensors headers (no tensor data)."""
    from huggingface_hub import HfApi

    meta = HfApi(token=token).get_safetensors_metadata(repo, revision=sha, token=token)
    tensors: dict[str, TensorRef] = {}
    offsets: dict[str, tuple[int, int]] = {}
    for filename in sorted(meta.files_metadata):
        for name, info in meta.files_metadata[filename].tensors.items():
            dtype = ST_DTYPES.get(info.dtype, info.dtype.lower())
            tensors[name] = TensorRef(name, tuple(int(s) for s in info.shape), dtype, filename)
            offsets[name] = (int(info.data_offsets[0]), int(info.data_offsets[1]))
    return sorted(meta.files_metadata), tensors, RemoteFiles(repo, sha, token, offsets)


class RemoteSafetensors(WeightFormat):
    """Safetensors shards of one hub commit, read in place; bound to that commit's files (one per checkpoint)."""

    name = REMOTE_FORMAT

    def __init__(self, remote: RemoteFiles, tensors: dict[str, TensorRef]) -> None:
        self.remote = remote
        self._tensors = tensors

    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        return {n: t for n, t in self._tensors.items() if t.file in files}

    def open(self, ckpt: Checkpoint) -> TensorReader:
        return RemoteSafetensorsReader(ckpt.tensors, self.remote)


def fetched_bytes(ckpt: Checkpoint) -> int:
    """Bytes a streamed checkpoint fetched so far (0 for any other)."""
    return ckpt.format.remote.fetched if isinstance(ckpt.format, RemoteSafetensors) else 0


def remote_checkpoint(spec: str, repo: str, sha: str, token: str | None, config: dict[str, Any] | None,
                      quiet: bool = True) -> Checkpoint:
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # "Parse safetensors files" of a sharded repo
        _quiet_retries()
    files, tensors, remote = remote_index(repo, sha, token)
    if not tensors:
        raise SourceError(f"{spec}: the safetensors files hold no tensors")
    return Checkpoint(spec=spec, source="hub", root=Path(f"hub://{repo}"), files=files, tensors=tensors,
                      format=RemoteSafetensors(remote, tensors), revision=sha, config=config)


class RemoteSafetensorsReader(TensorReader):
    """Rows come from a window over the current tensor's bytes; a column read spools the tensor to a
    temporary file once and slices it through a short-lived memmap (so memory follows the block)."""

    def __init__(self, refs: dict[str, TensorRef], remote: RemoteFiles) -> None:
        self._refs = refs
        self._remote = remote
        self._window: tuple[str, int, bytes] | None = None  # tensor, first byte (tensor-relative), bytes
        self._spool: tuple[str, Path] | None = None

    # ---- bytes ------------------------------------------------------------------------------------
    def _bytes(self, ref: TensorRef, lo: int, hi: int) -> bytes:
        """Bytes [lo, hi) of the tensor (relative to its first byte), from the window or a new one."""
        begin, end = self._remote.tensor_range(ref)
        size = end - begin
        kept = b""
        if self._window is not None and self._window[0] == ref.name:
            w_lo, w_data = self._window[1], self._window[2]
            w_hi = w_lo + len(w_data)
            if w_lo <= lo and hi <= w_hi:
                return w_data[lo - w_lo:hi - w_lo]
            if w_lo <= lo < w_hi:  # the read straddles the window's end: keep its tail, fetch the rest
                kept = w_data[lo - w_lo:]
        fetch_lo = lo + len(kept)
        fetch_hi = min(size, max(hi, fetch_lo + RANGE_WINDOW))
        data = kept + self._remote.read(ref.file, begin + fetch_lo, begin + fetch_hi)
        self._window = (ref.name, lo, data)
        return data[: hi - lo]

    def _tensor(self, ref: TensorRef, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        dtype = getattr(torch, ref.dtype)
        if not data:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)

    # ---- TensorReader -----------------------------------------------------------------------------
    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        ref = self._refs[name]
        if not ref.shape:
            return self._tensor(ref, self._bytes(ref, 0, ref.nbytes), (1, 1))
        width = ref.numel // max(1, ref.shape[0])
        row_bytes = width * dtype_size(ref.dtype)
        t = self._tensor(ref, self._bytes(ref, start * row_bytes, stop * row_bytes), (stop - start, width))
        return t if len(ref.shape) > 1 else t.reshape(-1, 1)

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        ref = self._refs[name]
        path = self._spooled(ref)
        view = np.memmap(path, dtype=np.uint8, mode="r").reshape(ref.shape[0], -1)
        item = dtype_size(ref.dtype)
        block = np.ascontiguousarray(view[:, start * item:stop * item])
        del view  # unmapped: the spool's pages stop counting toward resident memory
        return torch.from_numpy(block).view(getattr(torch, ref.dtype)).reshape(ref.shape[0], stop - start)

    def full(self, name: str) -> torch.Tensor:
        ref = self._refs[name]
        return self._tensor(ref, self._bytes(ref, 0, ref.nbytes), ref.shape)

    def close(self) -> None:
        self._window = None
        self._drop_spool()

    # ---- spool for column reads ---------------------------------------------------------------------
    def _spooled(self, ref: TensorRef) -> Path:
        if self._spool is not None and self._spool[0] == ref.name:
            return self._spool[1]
        self._drop_spool()
        fd, tmp = tempfile.mkstemp(prefix="modeldelta-spool-", suffix=".bin")
        path = Path(tmp)
        self._spool = (ref.name, path)
        with os.fdopen(fd, "wb") as f:
            for lo in range(0, ref.nbytes, RANGE_WINDOW):
                f.write(self._bytes(ref, lo, min(ref.nbytes, lo + RANGE_WINDOW)))
        self._window = None
        return path

    def _drop_spool(self) -> None:
        if self._spool is not None:
            self._spool[1].unlink(missing_ok=True)
            self._spool = None

    def __del__(self) -> None:
        self._drop_spool()
