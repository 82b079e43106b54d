"""What B says it derives from: the model card's `base_model` (and `base_model_relation`), or a PEFT
adapter's `base_model_name_or_path`. Used to infer model_a when only model_b is given, and as the claim
that the diagnosis checks against the weights (diagnosis/fingerprints/claim.py).

Hub cards are read from the model info's card metadata (no README download); a local directory's from
its README.md front matter. Relations follow the Hub's `base_model_relation` values; when the card does
not state one, an adapter config means `adapter`, a quantization_config `quantized`, else `finetune`
(what the Hub assumes for a card that names a base and no relation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldelta_mcp.errors import ModelDeltaError, SourceError
from modeldelta_mcp.facts import BaseClaim
from modeldelta_mcp.models import BaseInference
from modeldelta_mcp.sources import Checkpoint
from modeldelta_mcp.sources.jsonfile import read_json_object
from modeldelta_mcp.sources.spec import ModelSpec

RELATIONS = ("adapter", "finetune", "merge", "quantized")
ADAPTER_CONFIG = "adapter_config.json"


def _bases(value: Any) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [value.strip()]
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def _relation(card: dict[str, Any] | None, adapter: bool, config: dict[str, Any] | None) -> tuple[str, bool]:
    stated = (card or {}).get("base_model_relation")
    if isinstance(stated, str) and stated.strip().lower() in RELATIONS:
        return stated.strip().lower(), True
    if adapter:
        return "adapter", False
    if config and config.get("quantization_config"):
        return "quantized", False
    return "finetune", False


def _local_card(root: Path) -> dict[str, Any] | None:
    from huggingface_hub.repocard import metadata_load

    readme = root / "README.md"
    if not readme.is_file():
        return None
    try:
        return metadata_load(readme)
    except Exception as exc:  # malformed YAML front matter
        raise SourceError(f"{readme}: unreadable model card metadata ({exc.__class__.__name__})") from exc


@dataclass(frozen=True)
class _Named:
    base: str
    source: str  # card | adapter_config
    detail: str


def _named_bases(spec: ModelSpec | str, token: str | None) -> list[_Named]:
    """Every base B names, with where it was read."""
    named: list[_Named] = []
    model = ModelSpec.of(spec)
    spec = model.raw
    if model.is_local:
        path = model.local_path()
        if not path.exists():
            raise SourceError(f"{spec}: no such file or directory, and not a hub repo id (org/name[@revision])")
        root = path if path.is_dir() else path.parent
        card = _local_card(root)
        adapter_cfg = read_json_object(root / ADAPTER_CONFIG) if (root / ADAPTER_CONFIG).is_file() else None
        where = f"{root / 'README.md'}"
        adapter_where = f"{root / ADAPTER_CONFIG}"
    else:
        from modeldelta_mcp.sources import hub

        token = token or os.environ.get("HF_TOKEN") or None
        info = hub.hub_info(model, token)
        card = info.card
        adapter_cfg = None
        if info.is_adapter:
            with hub.hub_errors(spec):
                adapter_cfg = read_json_object(hub.fetch_side_file(info.repo, info.sha, ADAPTER_CONFIG, token))
        where = f"the model card of {info.repo}@{info.sha[:12]}"
        adapter_where = f"{ADAPTER_CONFIG} of {info.repo}@{info.sha[:12]}"
    if adapter_cfg is not None:
        for b in _bases(adapter_cfg.get("base_model_name_or_path")):
            named.append(_Named(b, "adapter_config", f"base_model_name_or_path in {adapter_where}"))
    for b in _bases((card or {}).get("base_model")):
        named.append(_Named(b, "card", f"base_model in {where}"))
    return named


def infer_base(model_b: ModelSpec | str, token: str | None = None) -> BaseInference:
    """model_a for a `model_b`-only call; a one-line error when B names no base or several."""
    named = _named_bases(model_b, token)
    model_b = ModelSpec.of(model_b).raw
    distinct = list(dict.fromkeys(n.base for n in named))
    if not distinct:
        raise ModelDeltaError(f"{model_b}: cannot infer the base: no base_model in its model card and no "
                              f"{ADAPTER_CONFIG}; pass model_a")
    if len(distinct) > 1:
        raise ModelDeltaError(f"{model_b}: cannot infer the base: it names several ({', '.join(distinct)}); "
                              "pass one of them as model_a")
    first = next(n for n in named if n.base == distinct[0])
    return BaseInference(model_a=first.base, source=first.source, detail=first.detail)  # type: ignore[arg-type]


def claim_of(ckpt: Checkpoint) -> BaseClaim | None:
    """The base B claims, from facts resolved with it (hub card metadata, local README, adapter config)."""
    card = ckpt.card
    if card is None and ckpt.source != "hub" and ckpt.root.is_dir():
        try:
            card = _local_card(ckpt.root)
        except SourceError:  # a broken card claims nothing; the comparison itself does not need it
            card = None
    adapter = ckpt.adapter
    bases = _bases(adapter.base_model_name_or_path) if adapter is not None else []
    origin = "adapter_config" if bases else "card"
    bases += [b for b in _bases((card or {}).get("base_model")) if b not in bases]
    if not bases:
        return None
    relation, stated = _relation(card, adapter is not None, ckpt.config)
    return BaseClaim(tuple(bases), relation, stated, origin)
