"""The documentation site, opened in a real browser: math typeset offline, every image loaded, no console error.

Reads the site built by ``python -m sphinx -W -b html docs docs/_build/html`` (CI builds it before the
tests), serves it on 127.0.0.1 and opens every derivation page, the verification guide, every executed
notebook and the API pages in headless Chromium (Debian's ``chromium``), driven by Playwright with no browser download.  The network is
closed to the browser except for that local server, so a page that needs a CDN fails here.  Screenshots go
to ``docs/_build/html/_screenshots/``.  Skipped, saying so, when the site is not built, Chromium is not
installed or Playwright is missing.
"""
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("REFSNN_DOCS_HTML", ROOT / "docs" / "_build" / "html"))
BUILD = "python -m sphinx -W -b html docs docs/_build/html"
PAGES = ["index.html", "stbp.html", "st_rsbp.html", "ide.html", "ssnn_bp.html", "verify.html", "verify_cases.html",
         "peers_examples.html", "course.html", "usage.html", "results.html",
         "notebooks/00_overview.html", "notebooks/01_stbp.html", "notebooks/02_st_rsbp.html", "notebooks/03_ide.html",
         "notebooks/04_ssnn_bp.html", "notebooks/05_one_neuron_many_answers.html", "nir.html", "surrogates.html",
         "api/algorithms.html"]
NO_MATH = {"index.html", "verify.html", "verify_cases.html", "peers_examples.html", "course.html", "usage.html",
           "results.html", "api/algorithms.html"}   # pages without a formula (the rest must have some, all typeset)


def _figures(page_path):
    """The number of images the executed notebook behind ``page_path`` produced (its PNG/SVG outputs)."""
    nb = SITE.parent / "jupyter_execute" / page_path.replace(".html", ".ipynb")
    if not nb.exists():
        return None
    cells = json.loads(nb.read_text())["cells"]
    return sum(1 for c in cells for o in c.get("outputs", []) if {"image/png", "image/svg+xml"} & set(o.get("data", {})))


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").exists():
        pytest.skip(f"the documentation site is not built ({SITE} has no index.html): run `{BUILD}` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium): the browser test is skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.mark.parametrize("page_path", PAGES)
def test_page_renders_math_and_images_without_errors(site_url, browser, page_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, failed = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    # Only the local server: anything else (a CDN) is refused, and shows up as a failed request.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site_url) else route.abort())
    page.goto(f"{site_url}/{page_path}", wait_until="load")
    maths = page.evaluate("document.querySelectorAll('span.math, div.math').length")
    if maths:                     # Sphinx loads MathJax only on pages with math
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30000)
        page.evaluate("MathJax.startup.promise")
    typeset = page.evaluate("document.querySelectorAll('span.math mjx-container, div.math mjx-container').length")
    text = page.evaluate("document.querySelector('main, article, body').innerText")
    images = page.evaluate("[...document.images].map(i => [i.src, i.complete && i.naturalWidth > 0])")
    # Nothing cut off by the text column: code wraps (its box is no wider inside than outside), and a display
    # equation wider than the column scrolls in its own box (docs/_static/refsnn.css).
    cut_code = page.evaluate("""[...document.querySelectorAll('div.highlight pre, div.cell_output pre')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.split('\\n')[0].slice(0, 60))""")
    cut_math = page.evaluate("""[...document.querySelectorAll('div.math, mjx-container[display="true"]')]
        .filter(e => e.scrollWidth > e.clientWidth + 1 && !['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
        .length""")
    links = page.evaluate("""[...document.querySelectorAll('article a[href]')].map(a => a.href)
        .filter(h => h.startsWith(location.origin) && !h.includes('#'))""")
    shots = SITE / "_screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / (page_path.replace("/", "_").replace(".html", ".png"))), full_page=False)
    page.close()
    assert maths > 0 or page_path in NO_MATH, f"{page_path}: no math on the page"
    assert typeset == maths, f"{page_path}: {maths - typeset} of {maths} formulas were not typeset by MathJax"
    for raw in ("\\(", "\\[", "$$"):
        assert raw not in text, f"{page_path}: raw math delimiter {raw!r} left in the rendered text"
    broken = [src for src, ok in images if not ok]
    assert not broken, f"{page_path}: images that did not load: {broken}"
    if page_path.startswith("notebooks/"):
        figures = _figures(page_path)
        assert figures, f"{page_path}: the notebook was not executed into the site (no figure outputs)"
        assert len(images) >= figures, f"{page_path}: {figures} figures produced, {len(images)} shown"
    assert not cut_code, f"{page_path}: code blocks wider than the column (cut off): {cut_code}"
    assert not cut_math, f"{page_path}: {cut_math} display equations wider than the column and not scrollable"
    missing = sorted({h for h in links if not (SITE / h[len(site_url) + 1:].split("?")[0]).exists()})
    assert not missing, f"{page_path}: links to pages that do not exist: {missing}"
    assert not failed, f"{page_path}: requests that failed (a CDN, a missing file): {failed}"
    assert not errors, f"{page_path}: console errors: {errors}"


@pytest.mark.parametrize("page_path", [p for p in PAGES if p.startswith("notebooks/")])
def test_tables_a_notebook_displays_render_as_tables(page_path):
    """A table a notebook cell displays as Markdown (its results) is a table on the site, not a paragraph of
    pipes (myst-nb's default CommonMark renderer has no tables)."""
    if not (SITE / "index.html").exists():
        pytest.skip(f"the documentation site is not built ({SITE} has no index.html): run `{BUILD}` first")
    import re

    html = (SITE / page_path).read_text()
    text = re.sub(r"<pre.*?</pre>|<code.*?</code>|<script.*?</script>", " ", html, flags=re.S)
    raw = re.findall(r"<p>\s*\|[^<\n]*\|[^<\n]*\|", text)
    assert not raw, f"{page_path}: a Markdown table printed as text: {raw[0][:120]}"
