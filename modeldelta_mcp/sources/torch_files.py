"""PyTorch `.bin` checkpoints: loaded with mmap=True and weights_only=True, never executed."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.sources.checkpoint import TensorReader, TensorRef
from modeldelta_mcp.sources.guard import check_torch_state, file_error

# torch's weights-only unpickler names what it refused ("Unsupported global: GLOBAL builtins.exec ...").
# torch 2.6+: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
_REFUSED = re.compile(r"[Uu]nsupported (global: GLOBAL \S+|GLOBAL \S+|operand \d+|class \S+)")


def _refusal(exc: BaseException) -> str:
    m = _REFUSED.search(str(exc))
    if not m:
        return "not a plain tensor dict"
    return "unsupported " + m.group(1).replace("global: GLOBAL ", "global ").replace("GLOBAL ", "global ")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A weights-only state dict whose tensors were checked to fit the file (mmapped where the format allows)."""
    try:
        # mmap keeps tensor data on disk until a slice is touched (zip format only).
        mmap = zipfile.is_zipfile(path)
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: file not found") from exc
    except pickle.UnpicklingError as exc:
        raise SourceError(
            f"{path}: refused, the pickle holds more than plain weights ({_refusal(exc)}); nothing was executed"
        ) from exc
    except Exception as exc:
        raise file_error(path, "not a readable PyTorch checkpoint", exc) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"{path}: not a state dict of tensors")
    check_torch_state(path, state)
    return state


def index_file(root: Path, rel: str) -> list[TensorRef]:
    state = load_state(root / rel)
    return [
        TensorRef(name, tuple(t.shape), str(t.dtype).removeprefix("torch."), rel) for name, t in state.items()
    ]


class TorchBinReader(TensorReader):
    """Holds one shard's mmapped state dict at a time (shards are visited in order)."""

    def __init__(self, root: Path, refs: dict[str, TensorRef]) -> None:
        self._root = root
        self._refs = refs
        self._file: str | None = None
        self._state: dict[str, torch.Tensor] = {}

    def _tensor(self, name: str) -> torch.Tensor:
        rel = self._refs[name].file
        if rel != self._file:
            self._state = load_state(self._root / rel)
            self._file = rel
        return self._state[name]

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        t = self._tensor(name)
        view = t.reshape(t.shape[0], -1) if t.dim() >= 1 else t.reshape(1, 1)
        if t.dim() == 1:
            view = t.reshape(-1, 1)
        return view[start:stop].clone()

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._tensor(name)[:, start:stop].clone()

    def full(self, name: str) -> torch.Tensor:
        return self._tensor(name).clone()

    def close(self) -> None:
        self._state = {}
        self._file = None
