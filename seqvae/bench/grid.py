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
    the base names the same component (``--set decoder.num_layers=2 --decoder lstm``).
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
            node[leaf] = _merge_component(node.get(leaf), value)
        cells.append(raw)
    return cells


def _merge_component(old: Any, new: Any) -> Any:
    if isinstance(new, str) and isinstance(old, dict) and old.get("kind") == new:
        return old
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
