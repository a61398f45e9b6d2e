"""Check a built site (``mkdocs build``): what a reader would see as broken, found in the HTML.

* raw TeX: a formula left as ``\\(...\\)`` / ``\\[...\\]`` or an unconverted ``arithmatex`` element
  (docs/hooks/maths.py turns every formula into MathML at build time);
* reST roles shown as text (``:class:`X```, ``:meth:``...): docstrings use mkdocstrings' cross-references;
* references to files readers do not have: ``../shared/``, ``shared/data``, ``shared/reference``;
* a ``href`` to a local file outside the site (``file:`` or an absolute path).

Usage: ``python docs/hooks/check_site.py SITE_DIR`` (``.ci/run`` runs it after the build); exit 1
with one line per problem, naming the page.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_CODE = re.compile(r"<(pre|code)\b.*?</\1>", re.S)  # what code blocks show is not prose
_PROBLEMS = [
    (re.compile(r'class="arithmatex"'), "a formula that was not rendered"),
    (re.compile(r"\\\(|\\\[(?!\])"), "raw TeX (\\( or \\[)"),
    (re.compile(r":(class|meth|func|mod|data|attr|exc):`"), "a reST role shown as text"),
]
_EVERYWHERE = [
    (re.compile(r"\.\./shared/|shared/data/|shared/reference"), "a path readers do not have (shared/...)"),
    (re.compile(r'href="(file:|/(?!/)[^"]*\.(md|py|txt|json))'), "a link to a local file"),
]


def problems(html: str) -> list[str]:
    """What is wrong with one page's HTML (empty when nothing is)."""
    prose = _CODE.sub("", html)
    found = [why for pattern, why in _PROBLEMS if pattern.search(prose)]
    return found + [why for pattern, why in _EVERYWHERE if pattern.search(html)]


def check(site: Path) -> list[str]:
    """``page: problem`` for every problem of every page under ``site``."""
    out = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":
            continue
        out += [f"{page.relative_to(site)}: {why}" for why in problems(page.read_text(encoding="utf-8"))]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: check_site.py SITE_DIR", file=sys.stderr)
        return 2
    site = Path(argv[0])
    if not (site / "concepts" / "metrics" / "index.html").exists():
        print(f"{site}: no concepts/metrics page; is it a built seqvae site?", file=sys.stderr)
        return 2
    found = check(site)
    for line in found:
        print(line, file=sys.stderr)
    pages = len(list(site.rglob("*.html")))
    print(f"{pages} pages checked, {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
