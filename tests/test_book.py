"""The book (``scripts/build_book.sh``): built from what is committed, with no warning and no
broken internal link, and read in a real browser from disk.

The build runs once per test session (``built_book``, about 2 minutes). The browser test uses
the ``browser`` fixture (tests/conftest.py: Debian's chromium through Playwright), skipped without it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
pytest.importorskip("myst_nb", reason="the book needs myst-nb (requirements.txt; run scripts/setup.sh)")
import book_pages  # noqa: E402
import check_links  # noqa: E402


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "CLAMU_BOOK_OUT": str(out), "CLAMU_VENV": str(Path(sys.executable).parents[1])}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "build_book.sh")], env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, f"the book did not build cleanly (sphinx -W):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return out / "html"


@pytest.mark.timeout(1500)
def test_the_book_builds_with_no_warning_and_every_internal_link_resolves(built_book):
    broken, checked, _ = check_links.broken_links(built_book)
    assert broken == [] and checked > 1000
    pages = {p.relative_to(built_book).as_posix() for p in built_book.rglob("*.html")}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):                # every notebook, in the book
        assert f"notebooks/{nb.stem}.html" in pages
    assert "figures/cpu/REPORT.html" in pages and "SECURITY.html" in pages
    assert "book/api/generated/methods.html" in pages and "book/api/generated/clamu_helpers.core.ledger.html" in pages
    # nothing is fetched from the network when a page opens
    shots = {p: (built_book / p).read_text().count("widget-screenshot") for p in pages if p.startswith("notebooks/")}
    assert {p for p, n in shots.items() if n} == {"notebooks/07_interactive_unlearning.html"}   # only the demo's widget
    for page in ("book/index.html", "notebooks/07_interactive_unlearning.html", "book/exactness.html"):
        html = (built_book / page).read_text()
        assert "src=\"http" not in html and "href=\"https://cdn" not in html, page


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#here">ok</a><a href="b.html#gone">x</a>'
                                     '<img src="img/missing.png"><a href="https://example.org">ext</a>')
    (tmp_path / "b.html").write_text('<h1 id="here">b</h1>')
    broken, checked, external = check_links.broken_links(tmp_path)
    assert checked == 3 and external == 1
    assert broken == ["a.html: b.html#gone (no element with id 'gone')", "a.html: img/missing.png (no such file)"]


def test_a_new_method_appears_in_the_book_without_editing_it():
    from dataclasses import dataclass

    from clamu_helpers.methods import METHODS, Method, register
    from clamu_helpers.methods import Params as MethodParams

    @register("book-test-method")
    class BookTestMethod(Method):
        """A method that exists only in this test: it serves |τ̄| / T."""
        reference = "this test"

        @dataclass
        class Params(MethodParams):
            beta: float = 0.5
            grid: list | None = None
    try:
        page = book_pages._methods_page()
    finally:
        del METHODS["book-test-method"]
    section = page.split("## `book-test-method`", 1)[1].split("\n## ", 1)[0]
    assert "reference: this test" in section and "BookTestMethod" in section
    assert "| `beta` | `float` | `0.5` |" in section and "| `grid` | `list \\| None` | `None` |" in section
    assert "\\|τ̄\\|" in section                       # |x| is notation, not a reST substitution
    assert "- a control of `sift`" in page.split("## `sift-random-mask`", 1)[1].split("\n## ", 1)[0]


def test_docstring_markdown_tables_and_bars_are_read_as_written():
    lines = ["Cost of one deletion |τ_u|:", "", "| method | steps |", "|---|---|", "| ``a|b`` | T·E |", "", "after"]
    book_pages.escape_bars(None, "module", "m", None, {}, lines)
    assert lines[0] == r"Cost of one deletion \|τ_u\|:"
    assert ".. list-table::" in lines and "   * - ``a|b``" in lines           # a bar inside a literal stays
    assert lines[-1] == "after" and "     - T·E" in lines


@pytest.mark.timeout(1500)
def test_a_reader_sees_a_figure_a_formula_and_a_table_opening_the_book_from_disk(browser, built_book):
    shot = Path(os.environ.get("CLAMU_BOOK_SCREENSHOT", built_book.parent / "book.png"))
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto((built_book / "book" / "index.html").as_uri())          # the landing page
    assert page.locator("h1").first.inner_text().startswith("Exact unlearning by model merging")
    assert page.locator("nav a:has-text('04 · ClAMU')").count() >= 1   # the notebooks, in reading order

    page.goto((built_book / "notebooks" / "04_clamu.html").as_uri())  # a notebook page
    figure = page.locator("img[alt^='Figure output in 04']").first
    figure.scroll_into_view_if_needed()
    assert figure.is_visible() and page.evaluate("(img) => img.naturalWidth", figure.element_handle()) > 100
    assert page.locator("table").first.is_visible()
    assert page.evaluate("() => [...document.images].every(i => i.alt.trim().length > 0)")
    page.screenshot(path=str(shot))

    page.goto((built_book / "book" / "exactness.html").as_uri())      # a formula, rendered offline
    page.wait_for_selector("mjx-container svg", timeout=60_000)
    assert page.locator("mjx-container svg").first.is_visible()

    page.goto((built_book / "book" / "api" / "generated" / "methods.html").as_uri())   # an API page
    assert page.locator("h2:has-text('clamu')").first.is_visible()
    assert page.locator("table").first.is_visible()

    page.goto((built_book / "notebooks" / "07_interactive_unlearning.html").as_uri())
    demo = page.locator(".widget-screenshot img")
    assert demo.count() == 1 and page.locator(".widget-screenshot").count() == 1 and page.evaluate("(img) => img.naturalWidth", demo.element_handle()) > 100
    assert failed == [], f"requests that failed (a file missing from the build): {failed}"
    assert shot.stat().st_size > 10_000
