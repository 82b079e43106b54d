"""Which parts changed: frozen layers, biases only, a resized vocabulary, layers copied across."""

from __future__ import annotations

from modeldelta_mcp.diagnosis.fingerprints.context import Context, finding, is_matrix, is_vector, layer_template, numel
from modeldelta_mcp.models import Finding, ModuleDelta


def _layers(mods: list[ModuleDelta]) -> dict[int, list[ModuleDelta]]:
    out: dict[int, list[ModuleDelta]] = {}
    for m in mods:
        if m.layer is not None:
            out.setdefault(m.layer, []).append(m)
    return out


def detect_frozen(ctx: Context) -> Finding | None:
    layers = _layers(ctx.mods)
    frozen = sorted(k for k, ms in layers.items() if all(m.identical for m in ms))
    changed = sorted(k for k, ms in layers.items() if any(not m.identical for m in ms))
    if not frozen or not changed:  # a whole layer bit-identical while another changed
        return None
    roles: dict[str, list[ModuleDelta]] = {}
    for m in ctx.mods:
        roles.setdefault(m.role, []).append(m)
    frozen_roles = sorted(r for r, ms in roles.items() if all(m.identical for m in ms))
    return finding(
        "frozen_modules", "info", "Frozen layers",
        f"Layers {_span(frozen)} are bit-identical to A while layers {_span(changed)} changed: training (or "
        f"editing) touched only part of the network." + (f" Untouched roles: {', '.join(frozen_roles)}." if frozen_roles
                                                          else ""),
        {"changed_layers": changed, "frozen_layers": frozen, "frozen_roles": frozen_roles},
        metric_value=len(frozen),
    )


def _span(layers: list[int]) -> str:
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(str(x) for x in layers)


def detect_bias_only(ctx: Context) -> Finding | None:
    if not ctx.changed or not all(is_vector(m) for m in ctx.changed):
        return None
    biases = [m for m in ctx.changed if m.name.endswith("bias")]
    if not biases:
        return None
    norms = [m for m in ctx.changed if m.role == "norm"]
    matrices = sum(1 for m in ctx.mods if is_matrix(m))
    return finding(
        "bias_only", "info", "Bias-only tuning (BitFit)",
        f"Only vectors changed: {len(biases)} bias vectors" + (f" and {len(norms)} norm vectors" if norms else "")
        + f"; all {matrices} weight matrices are bit-identical to A.",
        {"n_biases_changed": len(biases), "n_norms_changed": len(norms), "n_changed": len(ctx.changed),
         "roles": sorted({m.role for m in ctx.changed})},
        metric_value=len(ctx.changed),
    )


def detect_vocab_resized(ctx: Context) -> Finding | None:
    resized = [m for m in ctx.mods if m.rows_a is not None and m.rows_b is not None and m.rows_a != m.rows_b]
    if not resized:
        return None
    m = resized[0]
    added = (m.rows_b or 0) - (m.rows_a or 0)
    verb = "added" if added > 0 else "removed"
    return finding("vocab_resized", "notable", "Vocabulary resized",
                   f"{abs(added)} vocabulary rows {verb} ({m.rows_a} -> {m.rows_b}); the overlapping rows were "
                   "compared.",
                   {"rows_a": m.rows_a, "rows_b": m.rows_b, "rows_added": added,
                    "tensors": [x.name for x in resized]},
                   metric_value=added)


def _fingerprint(m: ModuleDelta, side: str) -> tuple[float, float, float] | None:
    """Exact-copy fingerprint of one side: CRC-32 of its stored bytes, its float64 norm, its size."""
    f = m.forensics
    crc, norm = (f.crc_a, f.norm_a) if side == "a" else (f.crc_b, f.norm_b)
    if crc is None:
        return None
    return crc, norm or 0.0, numel(m)


def detect_layer_copy(ctx: Context) -> Finding | None:
    """A changed layer j of B whose every tensor equals (bit for bit) layer i != j of A."""
    a_index: dict[tuple[str, tuple], set[int]] = {}
    by_layer: dict[int, list[tuple[str, ModuleDelta]]] = {}
    for m in ctx.mods:
        t = layer_template(m)
        fa = _fingerprint(m, "a")
        if t is None or fa is None or m.layer is None:
            continue
        a_index.setdefault((t, fa), set()).add(m.layer)
        by_layer.setdefault(m.layer, []).append((t, m))
    copies: list[list[int]] = []
    for j, items in sorted(by_layer.items()):
        if all(m.identical for _, m in items) or not any(is_matrix(m) for _, m in items):
            continue
        sources: set[int] | None = None
        for t, m in items:
            fb = _fingerprint(m, "b")
            hits = a_index.get((t, fb), set()) if fb is not None else set()
            sources = hits if sources is None else sources & hits
        sources = {i for i in (sources or set()) if i != j}
        if sources:
            copies.append([j, min(sources)])
    if not copies:
        return None
    pairs = ", ".join(f"B layer {j} = A layer {i}" for j, i in copies)
    return finding(
        "layer_copy", "notable", "Layers copied from other depths",
        f"{pairs}: every tensor of the layer is bit-identical to A's tensor at the other depth (layer duplication, "
        "a frankenmerge or a layer swap).",
        {"copies": copies, "n_copies": len(copies)},
        metric_value=len(copies),
    )
