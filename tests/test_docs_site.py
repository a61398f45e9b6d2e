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


# ------------------------------------------------------------------------------ the browser check

_FINE = {"maths": 3, "unsized": 0, "rawTex": 0, "roles": 0, "overflow": 0, "broken": []}


@pytest.mark.parametrize(("measured", "why"), [
    ({"unsized": 2}, "2 of 3 formulas not laid out"),
    ({"rawTex": 1}, "raw TeX"),
    ({"roles": 4}, "reST role"),
    ({"overflow": 35}, "35 px wider than a 1280 px window"),
    ({"broken": ["ptb.{train,valid,test}.txt"]}, "breaks 'ptb.{train,valid,test}.txt' in the middle"),
    ({"error": "SecurityError"}, "could not be measured"),
])
def test_the_browser_check_reports_each_measured_problem(measured, why):
    check = _load("check_browser")
    assert check.problems(_FINE) == []
    (found,) = check.problems({**_FINE, **measured})
    assert why in found


_PLANTED = """<!doctype html><html><head><meta charset="utf-8"><style>body {{ margin: 0 }}</style></head>
<body>{body}</body></html>"""


@pytest.mark.skipif(not _load("check_browser").find_browser(), reason="no Chromium on this machine")
def test_a_real_browser_sees_each_planted_problem(tmp_path):
    check = _load("check_browser")
    pages = {
        "good": '<p>fine <math><mi>x</mi><mo>=</mo><mn>1</mn></math></p><pre>\\(x\\) in code is fine</pre>'
                '<table><tr><td>sentence-vae</td><td>a b</td></tr></table>',
        "hidden-maths": '<p><math style="display:none"><mi>x</mi></math> and <math><mi>y</mi></math></p>',
        "raw-tex": "<p>the KL \\(q(z|x)\\) of a sentence</p>",
        "role": "<p>see :class:`Encoder`</p>",
        "too-wide": '<div style="width:1700px">wide</div>',
        "narrow-cell": '<table style="table-layout:fixed;width:300px"><tr><td style="width:40px;word-break:break-all">'
                       "ptb.train.txt</td><td>x</td></tr></table>",
    }
    for name, body in pages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_text(_PLANTED.format(body=body))
    measured = check.measure(tmp_path, check.find_browser())
    found = {page.split("/")[0]: check.problems(m) for page, m in measured.items()}
    assert found["good"] == [] and measured["good/index.html"]["maths"] == 1
    assert found["hidden-maths"] == ["1 of 2 formulas not laid out"]
    assert found["raw-tex"] == ["raw TeX (\\( or \\[) in the text"]
    assert found["role"] == ["a reST role shown as text"]
    assert len(found["too-wide"]) == 1 and "wider than a 1280 px window" in found["too-wide"][0]
    assert found["narrow-cell"] == ["a table cell breaks 'ptb.train.txt' in the middle"]
