"""``seqvae plugins list|show`` and ``seqvae config schema``: what is installed, and the config's JSON Schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from seqvae.cli._common import _fail, config_app, err, out, plugins_app


@plugins_app.command("list")
def plugins_list(
    kind: Annotated[Optional[str], typer.Option("--kind", help="Only this kind (encoder, decoder, ...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Import every entry to verify it (imports torch).")] = False,
) -> None:
    """List every registered component by kind with its package, version and status.

    Without --check only package metadata is read: nothing is imported. Status is ok,
    shadowed (a plugin with a built-in's name), ambiguous (several plugins share the name;
    use the package:name alias) or broken (with the cause).
    """
    from seqvae.registry import KINDS, get_registry

    kinds = list(KINDS)
    if kind is not None:
        if kind not in KINDS:
            _fail(f"Unknown kind '{kind}'. Kinds: {', '.join(KINDS)}.")
        kinds = [kind]
    entries = []
    for k in kinds:
        reg = get_registry(k)
        entries += reg.check() if check else reg.entries()
    if as_json:
        sys.stdout.write(json.dumps([e.as_dict() for e in entries]) + "\n")
        return
    from rich.table import Table

    table = Table(title="seqvae components")
    for col in ("kind", "name", "package", "version", "status"):
        table.add_column(col)
    for e in entries:
        status = e.status if not e.error else f"{e.status}: {e.error}"
        table.add_row(e.kind, e.name, e.dist, e.version, status)
    out.print(table)
    if check and any(e.status == "broken" for e in entries):
        raise typer.Exit(1)


@plugins_app.command("show", epilog="Examples:\n\n  seqvae plugins show free-bits\n\n  seqvae plugins show lstm --kind decoder --json")
def plugins_show(
    name: Annotated[str, typer.Argument(help="Component name (or package:name).")],
    kind: Annotated[Optional[str], typer.Option("--kind", help="encoder, decoder, ... (needed when several kinds share the name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a component's package, version, description and config fields (types, defaults, constraints)."""
    from seqvae.registry import KINDS, RegistryError, get_registry
    from seqvae.schema import component_info

    if kind is not None and kind not in KINDS:
        _fail(f"Unknown kind '{kind}'. Kinds: {', '.join(KINDS)}.")
    kinds = [kind] if kind else [k for k in KINDS if name.split(":")[-1] in get_registry(k).names()]
    if not kinds:
        import difflib

        every = sorted({n for k in KINDS for n in get_registry(k).names()})
        close = difflib.get_close_matches(name, every, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        _fail(f"No component named '{name}'.{hint} `seqvae plugins list` shows them all.")
    if len(kinds) > 1 and not as_json:  # never pick one silently: say that there are several
        err.print(f"'{name}' names {len(kinds)} components ({', '.join(kinds)}); all are shown, --kind picks one",
                  highlight=False)
    infos = []
    for k in kinds:
        try:
            infos.append(component_info(k, name))
        except (RegistryError, StopIteration) as exc:
            _fail(str(exc) or f"No {k} named '{name}'.")
    if as_json:
        sys.stdout.write(json.dumps(infos if len(infos) > 1 else infos[0], default=str) + "\n")
        return
    from rich.table import Table

    for info in infos:
        out.print(f"[bold]{info['kind']} {info['name']}[/] — {info['package']} {info['version']}"
                  f"{' (built-in)' if info['builtin'] else ''} · {info['entry_point']}", highlight=False)
        if info["summary"]:
            out.print(info["summary"], highlight=False)
        table = Table()
        for col in ("field", "type", "default", "constraints", "description"):
            table.add_column(col, overflow="fold")
        for f in info["fields"]:
            table.add_row(f["name"], f["type"], repr(f["default"]) if f["default"] != "(required)" else "(required)",
                          f["constraints"], f["description"])
        if info["fields"]:
            out.print(table)
        else:
            out.print("No config fields.")


@config_app.command("schema", epilog="Example:\n\n  seqvae config schema --out seqvae.schema.json")
def config_schema(
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the experiment config, built from the installed components."""
    from seqvae.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text)
        err.print(f"wrote {out_file}", highlight=False)
