"""From the CLI's axes (``--decoder lstm --decoder gru --seed 1 --seed 2``) to a grid of raw configs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["GRID_AXES", "expand_grid"]


#: CLI axis -> where in the raw config it lands.
GRID_AXES = {
    "encoder": ("encoder",),
    "decoder": ("decoder",),
    "prior": ("prior",),
    "schedule": ("schedule",),
    "regularizers": ("regularizers",),
    "strategy": ("strategy",),
    "seed": ("train", "seed"),
    "dataset": ("data", "dataset"),
}


def expand_grid(base: dict[str, Any], axes: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``axes`` (name -> values) applied on top of the raw config ``base``.

    An axis with no values keeps the base value. Component values keep the base's parameters when
    the base names the same component (``--set decoder.num_layers=2 --decoder lstm``); a different
    component takes those of the base's parameters that it also has, so a suite's settings (its
    decoder dropout, say) hold for every decoder of the grid, not only the suite's own.
    """
    names = [n for n in GRID_AXES if axes.get(n)]
    cells = []
    for combo in itertools.product(*(list(axes[n]) for n in names)):
        raw = _copy(base)
        for name, value in zip(names, combo):
            *parents, leaf = GRID_AXES[name]
            node = raw
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = _merge_component(node.get(leaf), value, _KIND_OF_AXIS.get(name))
        cells.append(raw)
    return cells


_KIND_OF_AXIS = {"encoder": "encoder", "decoder": "decoder", "prior": "prior", "schedule": "schedule"}


def _shared_fields(old: dict[str, Any], new: str, kind: str | None) -> dict[str, Any]:
    """The fields of ``old`` (another component's config) that component ``new`` of ``kind`` also has."""
    if kind is None:
        return {}
    from seqvae.registry import get_registry

    try:
        fields = get_registry(kind).get(new).Config.model_fields
    except Exception:  # an unknown name: validation reports it, with its suggestions
        return {}
    return {k: v for k, v in old.items() if k != "kind" and k in fields}


def _merge_component(old: Any, new: Any, kind: str | None = None) -> Any:
    if isinstance(new, str) and isinstance(old, dict) and old.get("kind") == new:
        return old
    if isinstance(new, str) and isinstance(old, dict):
        shared = _shared_fields(old, new, kind)
        return {"kind": new, **shared} if shared else new
    if isinstance(new, list) and isinstance(old, list):
        olds = {o.get("kind"): o for o in old if isinstance(o, dict)}
        return [olds.get(n, n) if isinstance(n, str) else n for n in new]
    return new


def _copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x
