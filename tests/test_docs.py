"""The documentation stays true to the code: the generated catalogue is current, and every public
class and function of the documented API has a docstring that states shapes where tensors are involved."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_MODULES = ["seqvae.interfaces", "seqvae.registry", "seqvae.config", "seqvae.model", "seqvae.composer",
               "seqvae.training", "seqvae.training.system", "seqvae.training.checkpoint", "seqvae.training.callbacks",
               "seqvae.training.recipes", "seqvae.training.run", "seqvae.run_dir", "seqvae.data.loading",
               "seqvae.data.batch", "seqvae.component_config", "seqvae.metrics", "seqvae.generation", "seqvae.data.vocab", "seqvae.data.corpora",
               "seqvae.data.corpus", "seqvae.data.datamodule", "seqvae.bench.suites", "seqvae.bench.runner", "seqvae.bench.grid",
               "seqvae.plots", "seqvae.schema", "seqvae.testing"]
# a shape in einops letters (``b d``, ``... b``, ``k b d``) or the word "shape"
SHAPE = re.compile(r"``[^`]*\b[bdtvkn]\b[^`]*``|\bshape\b|``[^`]*\.\.\.[^`]*``")


def test_catalogue_page_is_generated_from_the_current_registry():
    from seqvae.schema import catalogue_markdown

    page = ROOT / "docs" / "reference" / "catalogue.md"
    assert page.read_text() == catalogue_markdown(), (
        "docs/reference/catalogue.md is out of date: run `python -m seqvae.schema > docs/reference/catalogue.md`"
    )


def _public(module_name: str):
    mod = importlib.import_module(module_name)
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member) and member.__module__ == mod.__name__:
                        yield f"{module_name}.{name}.{attr}", member


CASES = [case for m in API_MODULES for case in _public(m)]


def _mentions_tensor(fn) -> bool:
    try:
        hints = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    text = " ".join(str(p.annotation) for p in hints.parameters.values()) + " " + str(hints.return_annotation)
    return "Tensor" in text and "Tensor | None" != text.strip()


@pytest.mark.parametrize(("qualname", "obj"), CASES, ids=[c[0] for c in CASES])
def test_public_api_has_docstrings_with_shapes(qualname, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{qualname} has no docstring"
    if inspect.isfunction(obj) and _mentions_tensor(obj):
        assert SHAPE.search(doc), f"{qualname} takes or returns tensors but its docstring states no shape"
