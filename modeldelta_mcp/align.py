"""Pair the tensors of A and B: wrapper prefixes, tied heads, vocabulary-axis overlap, roles, layers."""

from __future__ import annotations

from dataclasses import dataclass

from modeldelta_mcp.architecture import ArchitectureTable, default_table
from modeldelta_mcp.errors import AlignmentError
from modeldelta_mcp.models import SkippedTensor
from modeldelta_mcp.select import NO_FILTER, TensorFilter
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorRef

# The seed analyses only tensors of at least this many entries; its means and profile bands
# (and the O/Q paper table) are calibrated on that set, so `in_profile` keeps the same cut.
SEED_MIN_PARAMS = 1000


@dataclass(frozen=True)
class TensorPair:
    name: str  # as stored in B (or A when B lacks it)
    a: TensorRef
    b: TensorRef
    role: str
    layer: int | None
    rows: int | None = None  # overlapping rows on a resized vocabulary axis
    rows_a: int | None = None
    rows_b: int | None = None

    @property
    def numel(self) -> int:
        if self.rows is None:
            return self.a.numel
        return self.rows * (self.a.numel // max(1, self.a.shape[0]))

    @property
    def in_profile(self) -> bool:
        return self.numel >= SEED_MIN_PARAMS

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + self.b.nbytes


@dataclass
class Alignment:
    pairs: list[TensorPair]
    skipped: list[SkippedTensor]
    n_filtered: int = 0  # tensor pairs (or one-sided tensors) the filter left out


def _keyed(ckpt: Checkpoint, table: ArchitectureTable) -> dict[str, TensorRef]:
    """Key each tensor by its name without wrapper prefix; keep the raw name on a collision."""
    out: dict[str, TensorRef] = {}
    stripped = [(table.strip(n), ref) for n, ref in ckpt.tensors.items()]
    counts: dict[str, int] = {}
    for key, _ in stripped:
        counts[key] = counts.get(key, 0) + 1
    for key, ref in stripped:
        out[key if counts[key] == 1 else ref.name] = ref
    return out


def align(a: Checkpoint, b: Checkpoint, table: ArchitectureTable | None = None,
          selection: TensorFilter = NO_FILTER) -> Alignment:
    """`selection` leaves tensors out before anything is read (select.py); they are counted, not listed."""
    table = table or default_table()
    ka, kb = _keyed(a, table), _keyed(b, table)
    n_filtered = 0
    if selection.active:
        layer_set = selection.layer_set
        kept_a = {k for k, r in ka.items()
                  if selection.keeps([r.name, *([kb[k].name] if k in kb else [])], table.layer(r.name), layer_set)}
        kept_b = {k for k, r in kb.items()
                  if selection.keeps([r.name, *([ka[k].name] if k in ka else [])], table.layer(r.name), layer_set)}
        kept = kept_a | kept_b
        n_filtered = len(set(ka) | set(kb)) - len(kept)
        ka = {k: r for k, r in ka.items() if k in kept}
        kb = {k: r for k, r in kb.items() if k in kept}
    # (A's tensor, B's tensor, the name reported: B's as stored, or A's when B lacks the tensor)
    matched: list[tuple[TensorRef, TensorRef, str]] = [(ka[k], kb[k], kb[k].name) for k in kb if k in ka]
    only_a = {k for k in ka if k not in kb}
    only_b = {k for k in kb if k not in ka}

    # A tied head saved on one side only is the other side's embedding matrix.
    for head, embed in table.tied:
        if head in only_b and embed in ka and embed in kb:
            matched.append((ka[embed], kb[head], kb[head].name))
            only_b.discard(head)
        elif head in only_a and embed in kb and embed in ka:
            matched.append((ka[head], kb[embed], ka[head].name))
            only_a.discard(head)

    pairs: list[TensorPair] = []
    skipped: list[SkippedTensor] = []
    for ra, rb, name in matched:
        if not (ra.is_float and rb.is_float):
            skipped.append(SkippedTensor(name=name, reason=f"non-float dtype ({ra.dtype}/{rb.dtype})"))
            continue
        role, layer = table.role(name), table.layer(name)
        if ra.shape == rb.shape:
            pairs.append(TensorPair(name, ra, rb, role, layer))
            continue
        axis = table.vocab_axis(name)
        if (
            axis == 0
            and len(ra.shape) == len(rb.shape) >= 1
            and ra.shape[1:] == rb.shape[1:]
        ):
            rows = min(ra.shape[0], rb.shape[0])
            pairs.append(TensorPair(name, ra, rb, role, layer, rows=rows, rows_a=ra.shape[0], rows_b=rb.shape[0]))
            continue
        skipped.append(SkippedTensor(name=name, reason=f"shape mismatch {list(ra.shape)} vs {list(rb.shape)}"))
    skipped += [SkippedTensor(name=ka[k].name, reason="only in A") for k in sorted(only_a)]
    skipped += [SkippedTensor(name=kb[k].name, reason="only in B") for k in sorted(only_b)]
    if not pairs and selection.active:
        raise AlignmentError(f"{a.spec} and {b.spec}: the filter {_describe(selection)} selects no float tensor "
                             "held by both")
    if not pairs:
        raise AlignmentError(
            f"{a.spec} and {b.spec} have no float tensors in common "
            f"({len(a.tensors)} vs {len(b.tensors)} tensors): different architectures?"
        )
    order = {name: i for i, name in enumerate(b.tensors)}
    pairs.sort(key=lambda p: (p.b.file, order.get(p.b.name, 0)))
    return Alignment(pairs=pairs, skipped=skipped, n_filtered=n_filtered)


def _describe(selection: TensorFilter) -> str:
    parts = [f"include {list(selection.include)}"] if selection.include else []
    parts += [f"exclude {list(selection.exclude)}"] if selection.exclude else []
    parts += [f"layers {selection.layers}"] if selection.layers else []
    return ", ".join(parts)
