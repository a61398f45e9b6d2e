"""The docs site's build hook (formulas to MathML) and its checker (what a reader would see broken).

``.ci/run`` builds the site and runs docs/hooks/check_site.py on it; these tests plant each kind of
breakage in a page and see the checker report it, and render formulas through the hook.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parents[1] / "docs" / "hooks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_formulas_become_mathml_and_a_bad_one_names_the_page():
    pytest.importorskip("latex2mathml")
    maths = _load("maths")
    page = ('<p>KL <span class="arithmatex">\\(\\mathrm{KL}(q\\,\\|\\,p) \\ge 0\\)</span> and</p>'
            '<div class="arithmatex">\\[I(x;z) = \\mathbb{E}_x[\\log q(z\\mid x)]\\]</div>')
    out = maths.to_mathml(page, "concepts/metrics.md")
    assert out.count("<math") == 2 and 'display="block"' in out and "arithmatex" not in out and "\\(" not in out
    assert _load("check_site").problems(out) == []


PLANTED = [
    ('<p>the ELBO \\(\\log p(x)\\) bound</p>', "raw TeX"),
    ('<span class="arithmatex">x</span>', "not rendered"),
    ("<p>see :class:`Corpus` for the splits</p>", "reST role"),
    ('<p>read <a href="../shared/reference/verified-numbers.md">the numbers</a></p>', "shared/"),
    ("<pre><code>seqvae bench --data-dir ../shared/data/ptb</code></pre>", "shared/"),
    ('<a href="file:///home/me/notes.md">notes</a>', "local file"),
]


@pytest.mark.parametrize(("html", "why"), PLANTED, ids=[w for _, w in PLANTED])
def test_the_site_check_sees_each_planted_problem(html, why):
    found = _load("check_site").problems(html)
    assert len(found) == 1 and why in found[0], found


def test_code_blocks_may_show_tex_and_roles():
    """A code block that shows TeX or a reST role on purpose is not a rendering problem."""
    assert _load("check_site").problems("<pre><code>:class:`X` and \\(x\\)</code></pre>") == []


def test_the_check_of_a_site_folder_names_the_page(tmp_path):
    check_site = _load("check_site")
    (tmp_path / "concepts" / "metrics").mkdir(parents=True)
    (tmp_path / "concepts" / "metrics" / "index.html").write_text("<p>\\(x\\)</p>")
    (tmp_path / "index.html").write_text("<p>fine</p>")
    assert check_site.check(tmp_path) == ["concepts/metrics/index.html: raw TeX (\\( or \\[)"]
    assert check_site.main([str(tmp_path)]) == 1
    (tmp_path / "concepts" / "metrics" / "index.html").write_text("<p>fine</p>")
    assert check_site.main([str(tmp_path)]) == 0
