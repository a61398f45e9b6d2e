"""The results of ``seqvae bench``, ``train`` and ``eval`` as a rich table, plain lines or TSV.

``--format table`` (the default) is the rich table; when the terminal is too narrow for it the CLI
prints ``plain`` instead (one block of short lines per row), so no number is ever cut to ``54…``.
``--format tsv`` is one header line and one tab-separated line per row, every metric column
included, for scripts (``--json`` has everything)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["FORMATS", "render_results", "results_plain", "results_table", "results_tsv"]

FORMATS = ("table", "plain", "tsv")

_COLUMNS = [("-ELBO", "neg_elbo", "{:.2f}"), ("IW-NLL", "iw_nll", "{:.2f}"), ("rec", "rec", "{:.2f}"),
            ("KL", "kl", "{:.3f}"), ("MI", "mi", "{:.3f}"), ("AU", "au", "{:d}"),
            ("gap", "shuffle_gap", "{:.2f}"), ("PPL(IW)", "ppl_iw", "{:.2f}")]


def results_table(rows: list[dict[str, Any]], title: str = "seqvae bench") -> Table:
    """One row per grid cell: components, metrics, collapse verdict."""
    table = Table(title=title)
    strategies = any(r.get("strategy", "standard") != "standard" for r in rows)
    for col in ("encoder/decoder/prior", "schedule", "regularizers", *(["strategy"] if strategies else []), "seed"):
        table.add_column(col, overflow="fold")
    for head, _, _ in _COLUMNS:  # numbers never wrap or shrink: a table that cannot hold them is not printed
        table.add_column(head, justify="right", no_wrap=True, min_width=len(head))
    table.add_column("collapsed", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
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


def _row_fields(r: dict[str, Any]) -> tuple[str, list[str], str, str]:
    """(components label, formatted metric cells, collapsed, tokens/s) of a result row."""
    regs = "+".join(r["regularizers"]) or "-"
    strategy = r.get("strategy", "standard")
    label = (f"{r['encoder']}/{r['decoder']}/{r['prior']} {r['schedule']} {regs}"
             + ("" if strategy == "standard" else f" {strategy}") + f" seed {r['seed']}")
    m = r.get("metrics")
    if r.get("status") != "ok" or not m:
        return label, ["-"] * len(_COLUMNS), "FAILED", str(r.get("error", "failed"))
    cells = [fmt.format(m[key]) if key in m else "-" for _, key, fmt in _COLUMNS]
    tps = r.get("train_tokens_per_second")
    verdict = "n/a" if r["collapsed"] is None else "yes" if r["collapsed"] else "no"
    return label, cells, verdict, f"{tps:.0f}" if tps else "-"


def results_plain(rows: list[dict[str, Any]], title: str = "seqvae bench") -> str:
    """Each row as a short block (fits 80 columns): its components, then ``name value`` metric pairs."""
    lines = [title]
    for r in rows:
        label, cells, verdict, tps = _row_fields(r)
        lines.append(label)
        if verdict == "FAILED":
            lines.append(f"  FAILED: {tps}")
            continue
        pairs = [f"{head} {cell}" for (head, _, _), cell in zip(_COLUMNS, cells)]
        lines.append("  " + "  ".join(pairs[:4]))
        lines.append("  " + "  ".join(pairs[4:]) + f"  collapsed {verdict}  tok/s {tps}")
    return "\n".join(lines)


def results_tsv(rows: list[dict[str, Any]]) -> str:
    """A header line and one tab-separated line per row; failed rows have ``-`` metrics and their error."""
    head = ["encoder", "decoder", "prior", "schedule", "regularizers", "strategy", "seed",
            *[key for _, key, _ in _COLUMNS], "collapsed", "train_tokens_per_second", "status"]
    lines = ["\t".join(head)]
    for r in rows:
        _, cells, verdict, tps = _row_fields(r)
        failed = verdict == "FAILED"
        lines.append("\t".join([r["encoder"], r["decoder"], r["prior"], r["schedule"],
                                "+".join(r["regularizers"]) or "-", r.get("strategy", "standard"), str(r["seed"]),
                                *cells, "-" if failed else verdict, "-" if failed else tps,
                                "failed: " + tps.replace("\t", " ") if failed else "ok"]))
    return "\n".join(lines)


def render_results(console: Any, rows: list[dict[str, Any]], title: str, fmt: str = "table") -> None:
    """Print ``rows`` on a rich ``console`` in ``fmt``; a table wider than the console prints as ``plain``."""
    if fmt == "tsv":  # written as it is: a console would expand the tabs
        console.file.write(results_tsv(rows) + "\n")
        return
    if fmt == "table":
        table = results_table(rows, title=title)
        from rich.measure import Measurement

        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural <= console.width:  # the table fits without wrapping or cutting any cell
            console.print(table)
            return
    console.print(results_plain(rows, title), markup=False, highlight=False, soft_wrap=True)

