"""Describe components and configs from the installed registries: field tables and JSON Schema.

Used by ``seqvae plugins show``, ``seqvae config schema`` and the generated catalogue page of the
docs. Importing the components imports torch.
"""

from __future__ import annotations

from typing import Any

from seqvae.config import SLOTS as CONFIG_SLOTS
from seqvae.config import ExperimentConfig
from seqvae.registry import KINDS, get_registry

__all__ = ["SLOTS", "catalogue_markdown", "component_info", "experiment_schema", "field_rows"]

#: ExperimentConfig top-level slot -> registry kind (the config's table less the dataset, which sits in data).
SLOTS = {slot: kind for slot, kind in CONFIG_SLOTS.items() if "." not in slot}

_CONSTRAINTS = [("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")]


def _type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    if "anyOf" in prop:
        return " | ".join(_type(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list[{_type(prop.get('items', {}))}]"
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    return str(prop.get("type", "any")).replace("integer", "int").replace("number", "float").replace(
        "string", "str").replace("boolean", "bool").replace("null", "None")


def _constraints(prop: dict[str, Any]) -> str:
    parts = [f"{op} {prop[key]}" for key, op in _CONSTRAINTS if key in prop]
    for alt in prop.get("anyOf", []):
        parts += [f"{op} {alt[key]}" for key, op in _CONSTRAINTS if key in alt]
    return ", ".join(parts)


def field_rows(config_cls: type) -> list[dict[str, Any]]:
    """One row per field of a component ``Config`` (``kind`` excluded): name, type, default, constraints, description."""
    schema = config_cls.model_json_schema()
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        if name == "kind":
            continue
        rows.append({
            "name": name,
            "type": _type(prop),
            "default": "(required)" if name in required else prop.get("default"),
            "constraints": _constraints(prop),
            "description": prop.get("description", ""),
        })
    return rows


def component_info(kind: str, name: str) -> dict[str, Any]:
    """Registry metadata, docstring and fields of one component (imports it)."""
    reg = get_registry(kind)
    cls = reg.get(name)  # raises the registry's error (with its suggestion) for an unknown name
    entry = next(e for e in reg.entries() if e.name == name or f"{e.dist}:{e.name}" == name)
    doc = (cls.__doc__ or "").strip()
    return {
        "kind": kind,
        "name": entry.name,
        "package": entry.dist,
        "version": entry.version,
        "builtin": entry.builtin,
        "entry_point": entry.value,
        "summary": doc.split("\n\n")[0].replace("\n", " ") if doc else "",
        "fields": field_rows(cls.Config),
    }


def _component_schemas(kind: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``anyOf`` a bare name or any installed component's Config of ``kind`` (schemas put in ``defs``)."""
    reg = get_registry(kind)
    names = [n for n in reg.names()]
    options = []
    for n in names:
        try:
            cls = reg.get(n)
        except Exception:  # a broken plugin: leave it out of the schema
            continue
        sch = cls.Config.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sch.pop("$defs", {}))
        sch["properties"]["kind"] = {"const": n, "description": f"{kind} '{n}'"}
        sch["title"] = f"{kind}:{n}"
        key = f"{kind}.{n}"
        defs[key] = sch
        options.append({"$ref": f"#/$defs/{key}"})
    return {"anyOf": [{"type": "string", "enum": names, "description": f"a {kind} name"}, *options]}


def experiment_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the experiment config, with every installed component's fields."""
    schema = ExperimentConfig.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    props = schema["properties"]
    for slot, kind in SLOTS.items():
        comp = _component_schemas(kind, defs)
        if slot == "regularizers":
            props[slot] = {**{k: v for k, v in props[slot].items() if k in ("description", "title")},
                           "type": "array", "items": comp}
        else:
            props[slot] = {**{k: v for k, v in props[slot].items() if k in ("description", "title", "default")},
                           **comp}
    data = defs["DataConfig"]["properties"]
    data["dataset"] = {**{k: v for k, v in data["dataset"].items() if k in ("description", "default")},
                       **_component_schemas("dataset", defs)}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "seqvae experiment config"
    assert set(SLOTS.values()) | {"dataset"} == set(KINDS)  # every registry kind has a place in the schema
    return schema


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def catalogue_markdown() -> str:
    """The docs page listing every built-in component with its fields, generated from the registry.

    ``docs/reference/catalogue.md`` holds its output; a test fails when the two differ, so the page
    cannot fall behind the code. Regenerate with ``python -m seqvae.schema > docs/reference/catalogue.md``.
    """
    lines = [
        "# Catalogue of built-in components",
        "",
        "<!-- Generated by `python -m seqvae.schema > docs/reference/catalogue.md`; a test checks it is current. -->",
        "",
        "Every component seqvae ships, read from its registry (plugins add their own: `seqvae plugins list`,",
        "`seqvae plugins show NAME`). The component slot of a config takes the name alone or a mapping",
        "`{kind: NAME, field: value, ...}`.",
    ]
    for kind in KINDS:
        reg = get_registry(kind)
        builtins = [e for e in reg.entries() if e.builtin]
        if not builtins:
            continue
        lines += ["", f"## {kind.capitalize()}s" if not kind.endswith("y") else f"## {kind[:-1].capitalize()}ies"]
        for e in sorted(builtins, key=lambda e: e.name):
            info = component_info(kind, e.name)
            lines += ["", f"### `{e.name}`", "", f"`{info['entry_point']}`" + (f": {_md(info['summary'])}" if info["summary"] else ""), ""]
            if not info["fields"]:
                lines.append("No fields.")
                continue
            lines += ["| field | type | default | constraints | description |", "| --- | --- | --- | --- | --- |"]
            for f in info["fields"]:
                default = "(required)" if f["default"] == "(required)" else f"`{f['default']!r}`"
                lines.append(f"| `{f['name']}` | {_md(f['type'])} | {_md(default)} | {_md(f['constraints'])} | "
                             f"{_md(f['description'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(catalogue_markdown())
