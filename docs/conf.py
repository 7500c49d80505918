"""Sphinx configuration of refsnn's documentation site: ``python -m sphinx -W -b html docs docs/_build/html``.

The site is built from the repository alone and works offline: MathJax is served from the build folder
(sphinx-mathjax-offline), the theme bundles its own assets, and the notebooks are executed during the
build (myst-nb), so their figures are in the pages.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import refsnn  # noqa: E402

project = "refsnn"
author = "the refsnn developers"
copyright = "2026, the refsnn developers"
version = release = refsnn.__version__

# The results page's sweep tables: rendered at every build from the committed summaries in docs/sweeps/
# (``refsnn sweep report DIR --out docs/sweeps/NAME``), never typed by hand; results.md includes the file.
from refsnn.harness.sweep import results_page  # noqa: E402

_tables = results_page(HERE / "sweeps")
if not (HERE / "_sweep_tables.md").exists() or (HERE / "_sweep_tables.md").read_text() != _tables:
    (HERE / "_sweep_tables.md").write_text(_tables)

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",
]

# The notebooks live in ../notebooks; copy them beside the pages for the build (docs/notebooks is not committed).
# Their links to the derivation pages are written for Jupyter and the repository (``../docs/stbp.md``); beside
# the pages the same page is ``../stbp.md``, so the copy rewrites that one prefix.
_nb = HERE / "notebooks"
_nb.mkdir(exist_ok=True)
for src in sorted((ROOT / "notebooks").glob("*.ipynb")):
    dst = _nb / src.name
    text = src.read_text(encoding="utf-8").replace("](../docs/", "](../")
    if not dst.exists() or dst.read_text(encoding="utf-8") != text:
        dst.write_text(text, encoding="utf-8")

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute", "_sweep_tables.md",
                    "sweeps/*/summary.md"]   # rendered into results.md through _sweep_tables.md
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# Every build runs the notebooks: their outputs are the figures shown.  REFSNN_DOCS_EXECUTE=0 skips that (a quick
# look at the text while writing; the pages then show no outputs).
nb_execution_mode = "off" if os.environ.get("REFSNN_DOCS_EXECUTE", "1") == "0" else "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# Markdown that a cell displays (IPython.display.Markdown: the notebooks' result tables) is parsed as MyST, so
# that its tables render as tables (the default CommonMark renderer has none and prints the pipes).
nb_render_markdown_format = "myst"

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "none"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [(title, "params_style") for title in (   # the Configs group their fields by owner
    "Model settings", "Neuron-family settings (the official code's and the peers' variants)", "Official-code variants",
    "Reconstruction choices (no public code)", "Numerical settings", "Backend settings")]
napoleon_use_ivar = True                 # a class's Attributes section is text, not a second object description
# "x : ndarray, shape (T, batch, n_in)" makes napoleon look for a class T; several modules have one: not an error.
suppress_warnings = ["myst.header", "ref.python"]

html_theme = "sphinx_book_theme"
html_title = "refsnn"
html_theme_options = {
    "repository_url": "",
    "use_repository_button": False,
    "show_navbar_depth": 2,
    "home_page_in_toc": True,
}
html_context = {"default_mode": "light"}   # a fresh browser has no stored mode: say it, no console error
html_static_path = ["_static"]
html_css_files = ["refsnn.css"]
html_last_updated_fmt = None
