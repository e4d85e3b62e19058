"""What the book generates at build time instead of listing by hand.

- ``book/api/methods.md`` and ``book/api/settings.md``: one section per registered method and
  setting, read from the registries (``clamu_helpers.methods.METHODS``, the settings registry),
  so a new method file or setting appears in the book without editing it.
- ``book/generated/figures.md``: every figure and table the cpu reproduction committed under
  ``figures/cpu/`` (listed from the folder, so a new figure appears without editing the book).
- titles for the tables (``figures/cpu/*.md`` are bare Markdown tables) and alt text for the
  figures the notebooks output (each says which section of which notebook drew it).
- the offline MathJax the pages load: one file of the ``sphinx-mathjax-offline`` wheel
  (MathJax 3, every TeX extension, SVG output: no web fonts, so formulas render from disk).
"""
from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GENERATED = HERE / "api" / "generated"    # autosummary and the methods page
PAGES = HERE / "generated"                  # the figures page
FIGURES = ROOT / "figures" / "cpu"
MATHJAX_FILES = ("tex-svg-full.js", "ui")


def mathjax_static() -> str:
    """A folder holding ``mathjax/tex-svg-full.js`` (and its lazily loaded menu), for
    ``html_static_path``; raises with what to install when the wheel is missing."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the book needs MathJax offline: pip install sphinx-mathjax-offline==0.0.2 "
                           "(it is in requirements.txt; run scripts/setup.sh)")
    src = Path(spec.origin).parent / "static" / "mathjax"
    out = ROOT / "build" / "book-static"
    dst = out / "mathjax"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in MATHJAX_FILES:
        (shutil.copytree if (src / name).is_dir() else shutil.copy2)(src / name, dst / name)
    return str(out)


def _methods_page() -> str:
    """One section per method, from ``describe_methods`` (what ``python -m clamu_helpers
    methods`` prints) plus each parameter's declared type."""
    from dataclasses import fields

    from clamu_helpers.__main__ import describe_methods
    from clamu_helpers.methods import METHODS
    lines = ["# Methods", "",
             "Every method the unlearning system serves, read from its own declaration "
             "(`clamu_helpers.methods`: one file per method registers itself, so a new method appears "
             "here without editing the book). The parameters are the fields of the method's `Params`; "
             "`python -m clamu_helpers methods` prints the same list.", ""]
    for row in describe_methods():
        cls = METHODS[row["method"]]
        lines += [f"## `{row['method']}`", "", f"{{py:class}}`{cls.__module__}.{cls.__qualname__}`", ""]
        doc = [" ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())]
        if doc[0]:
            escape_bars(None, "class", row["method"], cls, {}, doc)   # the docstring is reST, as in the API pages
            lines += ["```{eval-rst}", doc[0], "```", ""]
        facts = [f"reference: {row['reference']}" if row["reference"] else "",
                 f"a control of `{row['control_of']}`" if row["control_of"] else "",
                 "takes clusters" if row["clustered"] else "",
                 f"served scale: `{cls.scale_param}`" if cls.scale_param else "",
                 f"unlearning cost rule: `{row['cost_rule']}`"]
        lines += [f"- {f}" for f in facts if f] + [""]
        if row["params"]:
            types = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", f.type)
                     for f in fields(cls.Params)}
            cell = lambda v: "`" + str(v).replace("|", "\\|") + "`"   # noqa: E731  (a pipe would end the cell)
            lines += ["| parameter | type | default |", "|---|---|---|"]
            lines += [f"| {cell(k)} | {cell(types[k])} | {cell(repr(v))} |" for k, v in row["params"].items()]
            lines.append("")
        else:
            lines += ["No parameters.", ""]
    return "\n".join(lines)


_LITERAL = re.compile(r"(``.*?``)")


_RULE = re.compile(r"^\s*\|(\s*:?-+:?\s*\|)+\s*$")


def _markdown_tables(lines: list[str]) -> list[str]:
    """The Markdown pipe tables of a docstring (header, ``|---|`` rule, rows) as reST list-tables."""
    out, i = [], 0
    while i < len(lines):
        if i + 1 < len(lines) and lines[i].lstrip().startswith("|") and _RULE.match(lines[i + 1]):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            rows = [lines[i]]
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += [f"{indent}.. list-table::", f"{indent}   :header-rows: 1", ""]
            for row in rows:
                cells = [c.strip() for c in _split_cells(row.strip().strip("|"))]
                out += [f"{indent}   * - {cells[0]}"] + [f"{indent}     - {c}" for c in cells[1:]]
            out.append("")
        else:
            out.append(lines[i])
            i += 1
    return out


def _split_cells(row: str) -> list[str]:
    """A table row's cells: split at the bars outside ````literals````."""
    cells = [""]
    for part in _LITERAL.split(row):
        if part.startswith("``"):
            cells[-1] += part
            continue
        first, *rest = part.split("|")
        cells[-1] += first
        cells += rest
    return cells


def escape_bars(app, what, name, obj, options, lines: list[str]) -> None:
    """Read the library's docstrings as they are written (``autodoc-process-docstring``):
    Markdown pipe tables become reST tables, and ``|x|`` is the paper's notation (absolute
    value, count: ``|τ_t|``, ``|m_t|``), not a reStructuredText substitution. Bars inside
    ````literals```` are left alone."""
    lines[:] = _markdown_tables(lines)
    for i, line in enumerate(lines):
        if "|" not in line:
            continue
        lines[i] = "".join(part if part.startswith("``") else part.replace("|", r"\|")
                           for part in _LITERAL.split(line))


def table_title(stem: str) -> str:
    """``table1_tofu`` → ``Table 1 (tofu)``; ``sift_unlearning_cost`` → ``sift unlearning cost``."""
    m = re.fullmatch(r"(table|fig)(\d+)_(.+)", stem)
    if m:
        return f"{'Table' if m[1] == 'table' else 'Figure'} {m[2]} ({m[3].replace('_', ' ')})"
    return stem.replace("_", " ")


def _figures_page() -> str:
    lines = ["# Figures and tables", "",
             "Everything the `cpu` reproduction committed under `figures/cpu/`, as it was committed: "
             "each figure's numbers are in the CSV beside it, and each table's `.meta.json` records the "
             "profile, the environment, the commit and the source digest it came from. The "
             "{doc}`../../figures/cpu/REPORT` judges them against the paper.", ""]
    for png in sorted(FIGURES.glob("*.png")):
        lines += [f"## {table_title(png.stem)}", "",
                  f"![{table_title(png.stem)}: the figure saved by the cpu reproduction as "
                  f"figures/cpu/{png.name}](../../figures/cpu/{png.name})", ""]
    tables = [p for p in sorted(FIGURES.glob("*.md")) if p.stem != "REPORT"]
    lines += ["## Tables", "", "```{toctree}", ":maxdepth: 1", ""]
    lines += [f"../../figures/cpu/{p.stem}" for p in tables] + ["```", ""]
    return "\n".join(lines)


def add_table_titles(app, docname: str, source: list[str]) -> None:
    """``source-read``: give each bare table of ``figures/cpu/`` a title (its page and the
    table of contents need one)."""
    if docname.startswith("figures/cpu/") and docname != "figures/cpu/REPORT":
        stem = docname.rsplit("/", 1)[1]
        source[0] = (f"# {table_title(stem)}\n\n`figures/cpu/{stem}.md`, as the cpu reproduction "
                     f"saved it (the same rows are in `{stem}.csv`).\n\n" + source[0])


def add_alt_text(app, doctree) -> None:
    """``doctree-read``: a figure a notebook outputs carries no alt text; give it one that says
    where it comes from (the notebook's title and the section its cell sits in)."""
    from docutils import nodes
    doc = app.env.docname
    if not doc.startswith("notebooks/"):
        return
    page = next(iter(doctree.findall(nodes.title)), None)
    title = page.astext() if page is not None else doc
    for image in doctree.findall(nodes.image):
        if image.get("alt"):
            continue
        section = next((n for n in _ancestors(image) if isinstance(n, nodes.section)), None)
        where = section[0].astext() if section is not None and len(section) else ""
        image["alt"] = f"Figure output in {title}" + (f", section “{where}”" if where and where != title else "")


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def write_generated_pages(app=None) -> list[Path]:
    """Write the generated pages (only when their text changed, so rebuilds stay incremental)."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    PAGES.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in {GENERATED / "methods.md": _methods_page(), PAGES / "figures.md": _figures_page()}.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTEBOOK = "notebooks/07_interactive_unlearning"   # the demo; other widget outputs are progress bars
WIDGET_SCREENSHOT = "figures/demo_browser.png"             # taken by tests/test_browser_demo.py


def show_widget_screenshot(app, doctree) -> None:
    """``doctree-read``: the demo's widget (notebook 07's task picker) is live only in a kernel;
    after its output, show the screenshot the browser test took of it in JupyterLab, with a
    note. (Other widget outputs, tqdm's progress bars, show nothing in the book.)"""
    from docutils import nodes
    if app.env.docname != WIDGET_NOTEBOOK:
        return
    note = nodes.paragraph(text="The widget is live only in JupyterLab (open this notebook there and "
                                "run it). Below, a screenshot of it after two tasks were picked and "
                                "Forget was pressed (taken by the kit's browser test):")
    shot = nodes.image(uri="/" + WIDGET_SCREENSHOT, alt="Notebook 07's widget in JupyterLab: two tasks picked "
                       "in the task picker, Forget pressed, the audit verdict and the request history shown")
    box = nodes.container("", note, shot, classes=["widget-screenshot"])
    for raw in list(doctree.findall(nodes.raw))[:]:
        if WIDGET_MIME in raw.astext():
            raw.parent.insert(raw.parent.index(raw) + 1, box)
            return                               # the first widget is the demo
    # executed by ``reproduce`` (static widgets: no live widget output), the page still shows it
    sections = list(doctree.findall(nodes.section))
    (sections[0] if sections else doctree).append(box)
