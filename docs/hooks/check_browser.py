"""Check a built site in a headless browser: what a reader's browser shows, after layout.

Every page is loaded in headless Chromium at 1280 x 900 (through a harness page that loads each
one into a frame and measures it) and is a problem when:

* a formula is not laid out: a ``<math>`` element with no width or height;
* raw TeX (``\\(``, ``\\[``) or a reST role (``:class:`...```) is in the text the reader sees
  (code blocks excluded);
* the page is wider than the window (something clips or forces a sideways scroll of the page);
* a table cell breaks a word in the middle (a cell narrower than its longest word).

Usage: ``python docs/hooks/check_browser.py SITE_DIR [--browser PATH]``; exit 1 with one line per
problem, naming the page; exit 3 when no Chromium is found (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH, HEIGHT = 1280, 900
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")

# runs inside the harness: loads each page into the frame, measures it, writes JSON into #out
_MEASURE = r"""
const pages = PAGES;
const frame = document.getElementById('f');
const results = {};
function measure(d) {
  const view = d.defaultView;
  const maths = [...d.querySelectorAll('math')];
  const unsized = maths.filter(m => { const r = m.getBoundingClientRect(); return !(r.width > 0 && r.height > 0); });
  const body = d.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style').forEach(e => e.remove());
  const text = body.textContent;
  const broken = [...d.querySelectorAll('td, th')].filter(c => {
    if (view.getComputedStyle(c).display === 'none' || c.closest('.md-sidebar')) return false;
    // the pieces a browser may not break: words, split after hyphens (a line may end at "sentence-")
    const words = c.textContent.split(/\s+|(?<=-)/).filter(w => w.length > 0);
    if (!words.length) return false;
    const probe = d.createElement('span'), cs = view.getComputedStyle(c);
    Object.assign(probe.style, {position: 'absolute', display: 'inline-block', whiteSpace: 'nowrap',
      fontFamily: cs.fontFamily, fontSize: cs.fontSize, fontWeight: cs.fontWeight, fontStyle: cs.fontStyle,
      letterSpacing: cs.letterSpacing});
    c.appendChild(probe);
    const widths = words.map(w => { probe.textContent = w; return probe.getBoundingClientRect().width; });
    probe.remove();
    const inner = c.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const longest = Math.max(...widths);
    c.dataset.longest = words[widths.indexOf(longest)];
    return longest > inner + 1;
  }).map(c => c.dataset.longest);
  return {
    maths: maths.length, unsized: unsized.length,
    rawTex: (text.match(/\\\(|\\\[/g) || []).length,
    roles: (text.match(/:(class|meth|func|mod|data|attr|exc):`/g) || []).length,
    overflow: d.documentElement.scrollWidth - d.documentElement.clientWidth,
    broken: broken,
  };
}
function next(i) {
  if (i >= pages.length) { document.getElementById('out').textContent = JSON.stringify(results); return; }
  frame.onload = () => {
    try { results[pages[i]] = measure(frame.contentDocument); }
    catch (e) { results[pages[i]] = {error: String(e)}; }
    next(i + 1);
  };
  frame.src = pages[i];
}
next(0);
"""


def find_browser(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, else the first of ``BROWSERS`` on the PATH."""
    if explicit:
        return explicit
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def measure(site: Path, browser: str, pages: list[Path] | None = None) -> dict[str, dict]:
    """Page (relative to ``site``) -> what the browser measured on it."""
    site = site.resolve()
    pages = pages or sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    urls = [p.resolve().as_uri() for p in pages]
    with tempfile.TemporaryDirectory() as tmp:
        harness = Path(tmp) / "harness.html"
        script = _MEASURE.replace("PAGES", json.dumps(urls))
        harness.write_text(f'<!doctype html><html><body><pre id="out">pending</pre>'
                           f'<iframe id="f" style="width:{WIDTH}px;height:{HEIGHT}px;border:0"></iframe>'
                           f"<script>{script}</script></body></html>")
        # --timeout (real milliseconds) bounds the run; the harness finishes long before it and the DOM is dumped
        # then. --virtual-time-budget, used before, left Chromium 156 hanging past any budget in 3 to 4 runs of 6
        # on one machine (the same site passing in between). The network flags keep it from background look-ups.
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--disable-quic",
               f"--user-data-dir={tmp}/profile", f"--window-size={WIDTH + 40},{HEIGHT + 200}",
               f"--timeout={5000 + 1500 * len(urls)}", "--dump-dom", harness.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + 10 * len(urls), check=False)
    found = re.search(r'<pre id="out">(.*?)</pre>', res.stdout, flags=re.S)
    if res.returncode != 0 or not found or found.group(1) == "pending":
        raise RuntimeError(f"{browser} did not measure the pages (exit {res.returncode}): {res.stderr[-500:]}")
    by_url = json.loads(html.unescape(found.group(1)))
    return {str(p.relative_to(site)): by_url[u] for p, u in zip(pages, urls)}


def problems(measured: dict) -> list[str]:
    """What is wrong with one page, from its measurements (empty when nothing is)."""
    if "error" in measured:
        return [f"could not be measured: {measured['error']}"]
    out = []
    if measured["unsized"]:
        out.append(f"{measured['unsized']} of {measured['maths']} formulas not laid out")
    if measured["rawTex"]:
        out.append("raw TeX (\\( or \\[) in the text")
    if measured["roles"]:
        out.append("a reST role shown as text")
    if measured["overflow"] > 0:
        out.append(f"the page is {measured['overflow']} px wider than a {WIDTH} px window")
    out += [f"a table cell breaks {word!r} in the middle" for word in measured["broken"]]
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site", type=Path)
    p.add_argument("--browser", default=None, help="Chromium executable (default: found on the PATH).")
    args = p.parse_args(argv)
    if not (args.site / "concepts" / "metrics" / "index.html").exists():
        print(f"{args.site}: no concepts/metrics page; is it a built seqvae site?", file=sys.stderr)
        return 2
    browser = find_browser(args.browser)
    if browser is None:
        print(f"no Chromium found (looked for {', '.join(BROWSERS)}); install Debian's: apt-get install chromium",
              file=sys.stderr)
        return 3
    measured = measure(args.site, browser)
    found = [f"{page}: {why}" for page, m in measured.items() for why in problems(m)]
    for line in found:
        print(line, file=sys.stderr)
    maths = sum(m.get("maths", 0) for m in measured.values())
    print(f"{len(measured)} pages measured in {Path(browser).name} at {WIDTH} px ({maths} formulas), "
          f"{len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
