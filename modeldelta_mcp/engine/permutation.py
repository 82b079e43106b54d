"""Hidden units of B permuted against A's: find the permutation, undo it, and re-measure those tensors.

Permuting the intermediate units of an MLP (rows of up/gate and the matching columns of down) or the
heads of an attention block (row blocks of q/k/v and the matching column blocks of o) leaves the
function unchanged but makes B − A look like an unrelated matrix (relative change ≈ √2). A permutation
keeps every norm exactly and a fine-tune after it moves norms by a few percent, so the cheap test reads
only what the exact comparison already measured: a changed up/gate/q/k/v matrix whose cosine with A is
low while its norm is A's. Only such layers are read again: the units are matched on their
concatenated row signatures (maximum cosine assignment), the matching is verified on every coupled
tensor, and the engine re-measures those tensors with B's rows/columns put back in A's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from modeldelta_mcp.align import TensorPair
from modeldelta_mcp.engine.run import EngineOptions, run_engine
from modeldelta_mcp.facts import PermutationFacts, PermutedGroup
from modeldelta_mcp.models import ModuleDelta
from modeldelta_mcp.sources.checkpoint import Checkpoint, TensorReader

# Flag: a permuted matrix has cosine ≈ 0 with A's (rows of i.i.d.-like weights against other rows); a
# fine-tune, even a heavy one, keeps it near 1. Half-way leaves a wide margin on both sides.
FLAG_MAX_COSINE = 0.5
# Flag: |‖B‖/‖A‖ − 1| at most this. A permutation keeps the norm exactly; training after it moves it by
# a few percent at most (a re-initialised matrix of another scale is not flagged).
FLAG_NORM_TOLERANCE = 0.05
# Verify: every coupled tensor's cosine with A after undoing the permutation. A fine-tune keeps it near
# 1; a matching forced onto unrelated weights leaves it near 0.
VERIFY_MIN_COSINE = 0.9

UNIT_ROLES = {  # units -> (roles permuted along rows, roles permuted along columns)
    "mlp": (("mlp_up", "mlp_gate"), ("mlp_down",)),
    "heads": (("attn_q", "attn_k", "attn_v"), ("attn_o",)),
}


@dataclass
class _Group:
    layer: int
    units: str
    rows: list[TensorPair] = field(default_factory=list)  # weights and biases permuted along axis 0
    cols: list[TensorPair] = field(default_factory=list)  # weights permuted along axis 1 (biases stay)


@dataclass(frozen=True)
class Undone:
    modules: list[ModuleDelta]  # every row, the permuted tensors re-measured on the aligned weights
    facts: PermutationFacts


def _flagged(m: ModuleDelta) -> bool:
    f = m.forensics
    if m.identical or len(m.shape) != 2 or not f.norm_a or f.norm_b is None:
        return False
    return m.cosine_sim < FLAG_MAX_COSINE and abs(f.norm_b / f.norm_a - 1.0) <= FLAG_NORM_TOLERANCE


def _groups(pairs: list[TensorPair], mods: list[ModuleDelta]) -> list[_Group]:
    """The layers' unit groups with a flagged row-side matrix (the cheap test: no tensor is read)."""
    by_name = {m.name: m for m in mods}
    groups: dict[tuple[int, str], _Group] = {}
    for p in pairs:
        if p.layer is None or p.rows is not None:
            continue
        for units, (row_roles, col_roles) in UNIT_ROLES.items():
            if p.role in row_roles:
                groups.setdefault((p.layer, units), _Group(p.layer, units)).rows.append(p)
            elif p.role in col_roles and len(p.a.shape) == 2:
                groups.setdefault((p.layer, units), _Group(p.layer, units)).cols.append(p)
    return [g for g in groups.values()
            if any(len(p.a.shape) == 2 and (m := by_name.get(p.name)) is not None and _flagged(m) for p in g.rows)]


def _n_units(group: _Group, config: dict | None) -> int | None:
    """Units of the group: MLP intermediate units, or attention heads (k/v heads under grouped-query attention:
    a unit is then a k/v head with the q heads that share it). None when the shapes do not split into them."""
    if not group.rows:
        return None
    if group.units == "mlp":
        n = group.rows[0].a.shape[0]
    else:
        cfg = config or {}
        heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads", cfg.get("num_attention_heads"))
        if not isinstance(kv, int) or not isinstance(heads, int) or kv <= 0 or heads % kv:
            return None
        n = kv
    tensors = [p.a.shape[0] for p in group.rows] + [p.a.shape[1] for p in group.cols]
    return n if n > 1 and all(t % n == 0 for t in tensors) else None


def _index(perm_inv: torch.Tensor, size: int) -> torch.Tensor:
    """Rows (columns) of a tensor of `size` along the unit axis, in A's unit order."""
    per = size // perm_inv.numel()
    return (perm_inv[:, None] * per + torch.arange(per)).flatten()


def _read(reader: TensorReader, group: _Group, side: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The group's row-side tensors as (rows, -1) and its column-side matrices, in float32."""
    name = (lambda p: p.a.name) if side == 0 else (lambda p: p.b.name)
    rows = [reader.full(name(p)).float().reshape(p.a.shape[0], -1) for p in group.rows]
    cols = [reader.full(name(p)).float() for p in group.cols]
    return rows, cols


def _signature(rows: list[torch.Tensor], cols: list[torch.Tensor], n: int) -> torch.Tensor:
    """Per unit, its rows of every row-side tensor and its columns of every column-side one, concatenated and
    normalised."""
    sig = torch.cat([r.reshape(n, -1) for r in rows] + [c.t().reshape(n, -1) for c in cols], dim=1)
    return sig / sig.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _assign(sim: torch.Tensor) -> torch.Tensor:
    """perm[i]: the unit of A that B's unit i is, by maximum total cosine."""
    best = sim.argmax(dim=1)
    if torch.unique(best).numel() == best.numel():
        return best
    from scipy.optimize import linear_sum_assignment  # ties, or a fine-tune blurring the argmax

    r, c = linear_sum_assignment(sim.double().numpy(), maximize=True)
    perm = torch.empty(sim.shape[0], dtype=torch.long)
    perm[torch.as_tensor(r)] = torch.as_tensor(c, dtype=torch.long)
    return perm


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double().flatten(), b.double().flatten()
    den = float(a64.norm() * b64.norm())
    if den == 0:  # zero tensors (biases initialised to zero) agree when both are zero
        return 1.0 if bool((a64 == b64).all()) else 0.0
    return float(a64 @ b64) / den


def _match(a: Checkpoint, b: Checkpoint, group: _Group, n: int) -> tuple[torch.Tensor, float] | None:
    """B's unit at each of A's units, and the smallest aligned cosine, when a verified permutation."""
    ra, rb = a.open(), b.open()
    try:
        rows_a, cols_a = _read(ra, group, 0)
        rows_b, cols_b = _read(rb, group, 1)
    finally:
        ra.close()
        rb.close()
    perm = _assign(_signature(rows_b, cols_b, n) @ _signature(rows_a, cols_a, n).t())
    if bool((perm == torch.arange(n)).all()):
        return None
    inv = torch.argsort(perm)  # inv[j]: B's unit that sits at A's unit j
    worst = min([_cosine(x, y[_index(inv, y.shape[0])]) for x, y in zip(rows_a, rows_b, strict=True)]
                + [_cosine(x, y[:, _index(inv, y.shape[1])]) for x, y in zip(cols_a, cols_b, strict=True)])
    return (inv, worst) if worst >= VERIFY_MIN_COSINE else None


class PermutedReader(TensorReader):
    """B's reader with the named tensors' rows (axis 0) or columns (axis 1) put back in A's order."""

    def __init__(self, inner: TensorReader, perms: dict[str, tuple[int, torch.Tensor]],
                 shapes: dict[str, tuple[int, ...]]) -> None:
        self._inner = inner
        self._perms = perms
        self._shapes = shapes
        self._cached: tuple[str, torch.Tensor] | None = None  # the tensor being read (blocks come in order)

    def _view(self, name: str) -> torch.Tensor:
        if self._cached is not None and self._cached[0] == name:
            return self._cached[1]
        axis, index = self._perms[name]
        t = self._inner.full(name)
        view = t.reshape(-1, 1) if t.dim() <= 1 else t.reshape(t.shape[0], -1)
        view = view[index] if axis == 0 else view[:, index]
        self._cached = (name, view)
        return view

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._view(name)[start:stop] if name in self._perms else self._inner.rows(name, start, stop)

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._view(name)[:, start:stop] if name in self._perms else self._inner.cols(name, start, stop)

    def tile(self, name: str, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        if name in self._perms:
            return self._view(name)[rows[0]:rows[1], cols[0]:cols[1]]
        return self._inner.tile(name, rows, cols)

    def full(self, name: str) -> torch.Tensor:
        return self._view(name).reshape(self._shapes[name]) if name in self._perms else self._inner.full(name)

    def close(self) -> None:
        self._cached = None
        self._inner.close()


@dataclass
class PermutedCheckpoint(Checkpoint):
    """B read through PermutedReader."""

    perms: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)

    def open(self) -> TensorReader:
        shapes = {name: self.tensors[name].shape for name in self.perms}
        return PermutedReader(self.format.open(self), self.perms, shapes)


def undo_permutations(a: Checkpoint, b: Checkpoint, pairs: list[TensorPair], mods: list[ModuleDelta],
                      options: EngineOptions) -> Undone | None:
    """The rows with permuted hidden units re-measured after undoing them, or None when none is found."""
    perms: dict[str, tuple[int, torch.Tensor]] = {}
    found: list[PermutedGroup] = []
    for group in _groups(pairs, mods):
        n = _n_units(group, b.config or a.config)
        matched = _match(a, b, group, n) if n is not None else None
        if matched is None:
            continue
        inv, worst = matched
        for p in group.rows:
            perms[p.b.name] = (0, _index(inv, p.b.shape[0]))
        for p in group.cols:
            perms[p.b.name] = (1, _index(inv, p.b.shape[1]))
        found.append(PermutedGroup(layer=group.layer, units=group.units, n_units=inv.numel(),
                                   n_moved=int((inv != torch.arange(inv.numel())).sum()), min_aligned_cosine=worst,
                                   tensors=tuple(p.name for p in group.rows + group.cols)))
    if not found:
        return None
    redo = [i for i, p in enumerate(pairs) if p.b.name in perms]
    aligned_b = PermutedCheckpoint(**{f: getattr(b, f) for f in b.__dataclass_fields__}, perms=perms)
    rerun = run_engine(a, aligned_b, [pairs[i] for i in redo], options)
    modules = list(mods)
    for i, m in zip(redo, rerun.modules, strict=True):
        modules[i] = m
    return Undone(modules, PermutationFacts(groups=tuple(sorted(found, key=lambda g: (g.layer, g.units)))))
