"""The layer order of docs/concepts/architecture.md holds: no module imports from a layer below it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "concepts" / "architecture.md"


def _layers() -> dict[str, int]:
    """``module prefix -> layer`` from the table under ``## Layers``."""
    section = DOC.read_text(encoding="utf-8").split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                layers[name] = int(m.group(1))
    return layers


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_of(module: str, layers: dict[str, int]) -> int | None:
    best = max((p for p in layers if module == p or module.startswith(p + ".")), key=len, default=None)
    return None if best is None else layers[best]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported seqvae module) of every import in ``path``, nested and TYPE_CHECKING ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "seqvae"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "seqvae":
                found.append((node.lineno, target))
    return found


def test_the_layer_table_parses_and_covers_every_module():
    layers = _layers()
    assert layers["seqvae.registry"] < layers["seqvae.config"] < layers["seqvae.interfaces"] < layers["seqvae.cli"]
    missing = [_module_name(p) for p in sorted((ROOT / "seqvae").rglob("*.py"))
               if _layer_of(_module_name(p), layers) is None]
    assert not missing, f"modules with no layer in {DOC.name}: {missing}"


def test_no_module_imports_from_a_lower_layer():
    layers = _layers()
    upward = []
    for path in sorted((ROOT / "seqvae").rglob("*.py")):
        module = _module_name(path)
        own = _layer_of(module, layers)
        for line, target in _imports(path, module):
            theirs = _layer_of(target, layers)
            if theirs is not None and own is not None and theirs > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({module}, layer {own}) imports {target} (layer {theirs})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_check_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The check is not vacuous: a low-layer module importing the CLI is reported."""
    layers = _layers()
    planted = tmp_path / "seqvae" / "data"
    planted.mkdir(parents=True)
    (planted / "vocab.py").write_text("def f():\n    from seqvae.cli import app\n")
    imports = _imports(planted / "vocab.py", "seqvae.data.vocab")
    assert imports == [(2, "seqvae.cli")]
    assert _layer_of("seqvae.cli", layers) > _layer_of("seqvae.data.vocab", layers)
