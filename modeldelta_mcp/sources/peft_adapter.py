"""PEFT LoRA adapter directories as checkpoint B: the base's tensors, with W + scaling·B·A on the targets.

The adapter's factors are small ((m + n)·r per module). The reader forms W + ΔW only for the rows or
columns the engine asks for, so memory follows the chunk, never the full ΔW. At load time each
module's exact spectrum comes from its r×r core: with B = Q_b R_b and Aᵀ = Q_a R_a (thin QR),
B·A = Q_b (R_b R_aᵀ) Q_aᵀ, so σ(scaling·B·A) = σ(scaling·R_b R_aᵀ). The facts (rank, alpha, scaling,
numerical rank, σ) go to the diagnosis as `Checkpoint.adapter` (facts.AdapterFacts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeldelta_mcp.errors import SourceError
from modeldelta_mcp.facts import AdapterFacts, AdapterModule
from modeldelta_mcp.sources.checkpoint import Checkpoint, Source, TensorReader, TensorRef
from modeldelta_mcp.sources.formats import WeightFormat
from modeldelta_mcp.sources.guard import adapter_settings, check_lora_factors, file_error, shown
from modeldelta_mcp.sources.jsonfile import read_json_object

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
# numpy.linalg.matrix_rank's default tolerance: σ > σ1·max(m, n)·eps (eps of float64, where the core
# is computed): below it a singular value is not resolved from zero.
CORE_RANK_EPS = 2.0**-52
# Singular values kept per module in the facts (the diagnosis needs the rank, not the whole list).
CORE_TOP = 8
_LORA = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")


def _strip(key: str) -> str:
    return key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches the module name or a dotted suffix."""
    for key, value in patterns.items():
        if module == key or re.fullmatch(rf"(.*\.)?(?:{key})", module):
            return value
    return default


def _open_weights(path: Path) -> dict[str, torch.Tensor]:
    """Adapter weights are small: read them whole (safetensors, or a weights_only torch pickle)."""
    if path.suffix != ".safetensors":
        from modeldelta_mcp.sources.torch_files import load_state

        return load_state(path)
    try:
        from safetensors.torch import load_file

        return load_file(str(path))  # the library checks the header's offsets against the file
    except Exception as exc:
        raise file_error(path, "not a readable adapter weights file", exc) from exc


def _base_name(base: Checkpoint, module: str, weight: str, adapter_key: str, path: Path) -> str:
    """The base tensor a module path names, exactly or up to the base's wrapper prefix."""
    wanted = f"{module}.{weight}"
    if wanted in base.tensors:
        return wanted
    from modeldelta_mcp.architecture import default_table

    table = default_table()
    key = table.strip(wanted)
    hits = [n for n in base.tensors if table.strip(n) == key]
    if len(hits) == 1:
        return hits[0]
    # The adapter's key is the target's name with PEFT's prefix: the target alone says it within one line.
    raise SourceError(f"{path}: an adapter tensor targets {shown(wanted)}, which base {base.spec} does not hold")


def _core(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """σ of scaling·B·A from the r×r core R_b R_aᵀ (descending, float64)."""
    rb = torch.linalg.qr(b.double(), mode="r").R
    ra = torch.linalg.qr(a.double().T, mode="r").R
    return torch.linalg.svdvals(scaling * rb @ ra.T)


@dataclass(frozen=True)
class LoraFactors:
    """Where one targeted tensor's factors are stored, and how they combine."""

    a: str  # adapter-file key of A (r × in)
    b: str  # adapter-file key of B (out × r)
    scaling: float
    transposed: bool  # embeddings and fan_in_fan_out store ΔW transposed


@dataclass(frozen=True)
class AdapterLayout:
    """What the reader needs: the adapter file, its factors and whole replacement tensors per base tensor."""

    weight_file: str  # relative to the adapter directory
    factors: dict[str, LoraFactors]  # base tensor name -> its factors
    replaced: dict[str, str]  # base tensor name -> adapter-file key of its replacement
    overlay: dict[str, TensorRef]  # the index entries the adapter changes


class PeftAdapter(WeightFormat):
    """A PEFT LoRA adapter directory. The registered instance only detects and loads; `load` returns a
    checkpoint whose format is an instance bound to its base and layout."""

    name = "adapter"

    def __init__(self, base: Checkpoint | None = None, layout: AdapterLayout | None = None) -> None:
        self.base = base
        self.layout = layout

    def claim(self, root: Path) -> list[str] | None:
        if not (root / ADAPTER_CONFIG).is_file():
            return None
        weights = next((f for f in WEIGHT_FILES if (root / f).is_file()), None)
        return [weights, ADAPTER_CONFIG] if weights else [ADAPTER_CONFIG]  # load says what is missing

    def _bound(self, where: Path) -> tuple[Checkpoint, AdapterLayout]:
        if self.base is None or self.layout is None:
            raise SourceError(f"{where}: a PEFT adapter can only be model_b; pass its base model as model_a")
        return self.base, self.layout

    def index(self, root: Path, files: list[str]) -> dict[str, TensorRef]:
        base, layout = self._bound(root)
        return {**base.tensors, **layout.overlay}

    def open(self, ckpt: Checkpoint) -> TensorReader:
        base, layout = self._bound(ckpt.root)
        return AdapterReader(base, ckpt.root, layout)

    def identity(self) -> object:
        return self.base.identity() if self.base is not None else None

    def load(self, spec: str, root: Path, files: list[str], source: Source, revision: str | None = None,
             base: Checkpoint | None = None) -> Checkpoint:
        return load_adapter(spec, root, base, revision=revision)


PEFT_ADAPTER = PeftAdapter()


def load_adapter(spec: str, path: Path, base: Checkpoint | None, source: Source = "adapter",
                 revision: str | None = None) -> Checkpoint:
    """Resolve a PEFT LoRA adapter directory against its base checkpoint (model_a)."""
    if base is None:
        raise SourceError(f"{path}: a PEFT adapter can only be model_b; pass its base model as model_a")
    cfg_path = path / ADAPTER_CONFIG
    cfg = read_json_object(cfg_path)
    settings = adapter_settings(cfg, cfg_path)
    peft_type = settings["peft_type"]
    if peft_type != "LORA":
        raise SourceError(f"{cfg_path}: peft_type {peft_type} is not supported (LoRA adapters only)")
    if settings["use_dora"]:
        raise SourceError(f"{cfg_path}: DoRA adapters (use_dora) are not supported")
    weight_file = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weight_file is None:
        raise SourceError(f"{path}: no adapter weights ({' or '.join(WEIGHT_FILES)})")
    state = _open_weights(weight_file)

    r_default = settings["r"]
    alpha_default = settings["lora_alpha"]
    rslora = settings["use_rslora"]
    fan_in_fan_out = settings["fan_in_fan_out"]
    factors: dict[str, dict[str, str]] = {}
    replaced: dict[str, str] = {}
    for key in state:
        m = _LORA.match(_strip(key))
        if m:
            factors.setdefault(m["module"], {})[m["kind"]] = key
        elif "lora_magnitude_vector" in key:
            raise SourceError(f"{weight_file}: DoRA magnitude vectors ({shown(key)}) are not supported")
        else:  # modules_to_save, trained biases, saved embedding layers: whole replacement tensors
            name = _strip(key).replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
            if "." not in name:
                raise SourceError(f"{weight_file}: tensor {shown(key)} names no module of the base")
            replaced[_base_name(base, name.rsplit(".", 1)[0], name.rsplit(".", 1)[1], key, weight_file)] = key

    overlay: dict[str, TensorRef] = {}
    modules: dict[str, LoraFactors] = {}
    facts_modules: list[AdapterModule] = []
    for module, kinds in sorted(factors.items()):
        embedding = "lora_embedding_A" in kinds
        ka, kb = (kinds.get("lora_embedding_A"), kinds.get("lora_embedding_B")) if embedding else (
            kinds.get("lora_A"), kinds.get("lora_B"))
        if ka is None or kb is None:
            raise SourceError(f"{weight_file}: module {shown(module)} lacks its {'A' if ka is None else 'B'} factor")
        a, b = state[ka], state[kb]
        check_lora_factors(weight_file, module, a, b)
        rank = int(a.shape[0])
        alpha = float(_pattern_value(settings["alpha_pattern"], module, alpha_default))
        scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
        name = _base_name(base, module, "weight", ka, weight_file)
        ref = base.tensors[name]
        transposed = embedding or fan_in_fan_out
        out_dim, in_dim = (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1])
        if len(ref.shape) != 2 or tuple(ref.shape) != (out_dim, in_dim):
            raise SourceError(f"{weight_file}: {shown(module)} factors give a {out_dim}×{in_dim} delta, base {name} "
                              f"is {list(ref.shape)}")
        overlay[name] = TensorRef(name, ref.shape, "float32", weight_file.name)
        modules[name] = LoraFactors(a=ka, b=kb, scaling=scaling, transposed=transposed)
        sigma = _core(a, b, scaling)
        s1 = float(sigma[0]) if sigma.numel() else 0.0
        core_rank = int((sigma > s1 * max(ref.shape) * CORE_RANK_EPS).sum()) if s1 > 0 else 0
        facts_modules.append(AdapterModule(name=name, rank=rank, alpha=alpha, scaling=scaling,
                                           numerical_rank=core_rank, frob_norm=float(sigma.square().sum().sqrt()),
                                           top_singular_values=tuple(float(s) for s in sigma[:CORE_TOP])))
    for name, key in replaced.items():
        t = state[key]
        dtype = "float32" if name in modules else str(t.dtype).removeprefix("torch.")
        overlay[name] = TensorRef(name, tuple(t.shape), dtype, weight_file.name)
    if not modules and not replaced:
        raise SourceError(f"{weight_file}: no LoRA factors found")
    facts = AdapterFacts(r=r_default, lora_alpha=alpha_default, use_rslora=rslora,
                         target_modules=cfg.get("target_modules"),
                         base_model_name_or_path=cfg.get("base_model_name_or_path"),
                         modules=tuple(facts_modules), replaced=tuple(sorted(replaced)))
    fmt = PeftAdapter(base, AdapterLayout(weight_file=weight_file.name, factors=modules, replaced=replaced,
                                          overlay=overlay))
    files = [weight_file.name, ADAPTER_CONFIG]
    return Checkpoint(spec=spec, source=source, root=path, files=files, tensors=fmt.index(path, files),
                      format=fmt, revision=revision, config=base.config, adapter=facts)


class AdapterReader(TensorReader):
    """Rows/columns of W + scaling·B·A for targeted tensors, the base's data otherwise."""

    def __init__(self, base: Checkpoint, root: Path, layout: AdapterLayout) -> None:
        self._base = base.open()
        self._modules = layout.factors
        self._replaced = layout.replaced
        self._path = root / layout.weight_file
        self._state: dict[str, torch.Tensor] | None = None

    def _weights(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            self._state = _open_weights(self._path)
        return self._state

    def _factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
        mod = self._modules[name]
        st = self._weights()
        return st[mod.a].float(), st[mod.b].float(), mod.scaling, mod.transposed

    def _own(self, name: str) -> torch.Tensor:
        """A tensor the adapter file replaces whole (modules_to_save, trained biases, saved embeddings)."""
        return self._weights()[self._replaced[name]]

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        if name in self._replaced:
            t = self._own(name)
            w = (t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(-1, 1))[start:stop].clone()
        else:
            w = self._base.rows(name, start, stop)
        if name not in self._modules:
            return w
        a, b, s, transposed = self._factors(name)
        delta = a[:, start:stop].T @ b.T if transposed else b[start:stop] @ a
        return w.float() + s * delta

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        w = self._own(name)[:, start:stop].clone() if name in self._replaced else self._base.cols(name, start, stop)
        if name not in self._modules:
            return w
        a, b, s, transposed = self._factors(name)
        delta = a.T @ b[start:stop].T if transposed else b @ a[:, start:stop]
        return w.float() + s * delta

    def full(self, name: str) -> torch.Tensor:
        w = self._own(name).clone() if name in self._replaced else self._base.full(name)
        if name not in self._modules:
            return w
        return self.rows(name, 0, w.shape[0]).reshape(w.shape)

    def close(self) -> None:
        self._base.close()
        self._state = None
