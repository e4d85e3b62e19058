"""Sphinx configuration of the kit's book: the notebooks with their committed outputs, the
results report, the security chapter and an API reference generated from the docstrings.

Built by ``scripts/build_book.sh`` (``sphinx-build -W``: a warning is an error). The source
folder is the repository root, restricted by ``include_patterns`` to the files the book
shows, so README, notebooks and report are read where they live, never copied. Notebooks are
never executed here (``nb_execution_mode = "off"``): the book shows what ``reproduce
--write-back`` committed.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import book_pages  # noqa: E402  (the pages generated from the library's declarations)

project = "clamu_helpers"
author = "the clamu_helpers authors"
copyright = "2026, the clamu_helpers authors"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.mathjax",
              "sphinx.ext.viewcode"]
root_doc = "book/index"
include_patterns = ["book/**", "SECURITY.md", "notebooks/*.ipynb", "figures/cpu/*.md"]
exclude_patterns = [".venv/**", ".git/**", "build/**", ".cache/**", "**/.ipynb_checkpoints/**",
                    "notebooks/.*", "figures/*/notebooks/**", "figures/*/logs/**"]

# notebooks: committed outputs only
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_inline"]
myst_heading_anchors = 3

# the API reference, from the docstrings
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True,
                           "ignore-module-all": True}   # each object documented once, where it is defined
autodoc_member_order = "bysource"
autodoc_typehints = "description"

# offline math: MathJax 3 (SVG output, no web fonts to fetch) from the sphinx-mathjax-offline wheel
mathjax_path = "mathjax/tex-svg-full.js"
html_static_path = [book_pages.mathjax_static()]

html_theme = "sphinx_book_theme"
html_title = "Exact unlearning by model merging: the clamu_helpers book"
html_theme_options = {"show_toc_level": 2, "use_download_button": True, "home_page_in_toc": True}
html_last_updated_fmt = None


def setup(app):
    app.connect("builder-inited", book_pages.write_generated_pages)
    app.connect("autodoc-process-docstring", book_pages.escape_bars)
    app.connect("source-read", book_pages.add_table_titles)
    app.connect("doctree-read", book_pages.show_widget_screenshot, priority=100)  # before images are collected
    app.connect("doctree-read", book_pages.add_alt_text)
