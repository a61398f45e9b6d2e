"""The bench results table (rich) shown by ``seqvae bench``."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["results_table"]

_COLUMNS = [("-ELBO", "neg_elbo", "{:.2f}"), ("IW-NLL", "iw_nll", "{:.2f}"), ("rec", "rec", "{:.2f}"),
            ("KL", "kl", "{:.3f}"), ("MI", "mi", "{:.3f}"), ("AU", "au", "{:d}"),
            ("gap", "shuffle_gap", "{:.2f}"), ("PPL(IW)", "ppl_iw", "{:.2f}")]


def results_table(rows: list[dict[str, Any]], title: str = "seqvae bench") -> Table:
    """One row per grid cell: components, metrics, collapse verdict."""
    table = Table(title=title)
    strategies = any(r.get("strategy", "standard") != "standard" for r in rows)
    for col in ("encoder/decoder/prior", "schedule", "regularizers", *(["strategy"] if strategies else []), "seed"):
        table.add_column(col, overflow="fold")
    for head, _, _ in _COLUMNS:
        table.add_column(head, justify="right")
    table.add_column("collapsed")
    table.add_column("tok/s", justify="right")
    for r in rows:
        base = [f"{r['encoder']}/{r['decoder']}/{r['prior']}", r["schedule"], "+".join(r["regularizers"]) or "-",
                *([r.get("strategy", "standard")] if strategies else []), str(r["seed"])]
        m = r.get("metrics")
        if r.get("status") != "ok" or not m:
            err = str(r.get("error", "failed"))
            table.add_row(*base, *["-"] * len(_COLUMNS), "FAILED", err[:60])
            continue
        cells = [fmt.format(m[key]) if key in m else "-" for _, key, fmt in _COLUMNS]
        tps = r.get("train_tokens_per_second")
        verdict = "n/a" if r["collapsed"] is None else "yes" if r["collapsed"] else "no"
        table.add_row(*base, *cells, verdict, f"{tps:,.0f}" if tps else "-")
    return table
