"""MkDocs hook: the formulas become MathML when the site is built, so pages need no script and no network.

``pymdownx.arithmatex`` (generic mode) wraps each formula as ``<span class="arithmatex">\\(...\\)</span>``
(inline) or ``<div class="arithmatex">\\[...\\]</div>`` (display); this hook replaces each with the
MathML that ``latex2mathml`` makes of it. Browsers render MathML natively. A formula that does not
convert stops the build, naming the page and the formula.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_FORMULA = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<display>.*?)\\\])\s*</(?P=tag)>',
    re.S,
)


def to_mathml(page_html: str, where: str = "page") -> str:
    """``page_html`` with every arithmatex formula replaced by MathML."""

    def one(m: re.Match[str]) -> str:
        display = m.group("display") is not None
        tex = html.unescape(m.group("display") if display else m.group("inline"))
        try:
            return convert(tex, display="block" if display else "inline")
        except Exception as exc:  # a formula latex2mathml cannot read: say which
            raise ValueError(f"{where}: cannot render the formula {tex!r} ({type(exc).__name__}: {exc})") from None

    return _FORMULA.sub(one, page_html)


def on_page_content(html_text: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs' hook signature)
    return to_mathml(html_text, page.file.src_path)
