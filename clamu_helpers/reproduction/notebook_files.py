"""The notebooks as files: each ``notebooks/NN_name.ipynb`` is paired with ``NN_name.py``.

The pairing follows jupytext's convention (``jupytext.toml``: ``formats = "ipynb,py:percent"``):
the ``py:percent`` script is the reviewed text, the ``.ipynb`` keeps the outputs readers see on
GitHub, papermill runs and nbval checks. Editing either one in JupyterLab (with jupytext
installed) keeps both in step; from a shell, ``jupytext --sync notebooks/*.ipynb``.

A committed notebook carries only what a reader, papermill and nbval need:

- notebook metadata: ``kernelspec``, ``language_info``, ``jupytext`` (the pairing's filters,
  which jupytext writes itself) and ``clamu`` (``targets``: the figures and tables the
  notebook makes, which ``reproduce --only`` reads; nothing else lists them). No saved widget
  state: it is megabytes of progress bars and GitHub draws widgets from their text anyway;
- cell metadata: ``tags`` only (``parameters`` marks papermill's parameters cell);
- no cell papermill injected (``injected-parameters``): the profile comes from
  ``$CLAMU_PROFILE`` in the one parameters cell.

:func:`clean` brings an executed notebook to that form; :func:`problems` says what keeps a
committed pair from it (the test suite fails on any).
"""
from __future__ import annotations

from pathlib import Path

from . import ROOT  # the repository root, declared with the layer
FOLDER = ROOT / "notebooks"

#: notebook-level metadata a committed notebook may carry
NOTEBOOK_METADATA = ("kernelspec", "language_info", "jupytext", "clamu")
#: cell-level metadata a committed notebook may carry
CELL_METADATA = ("tags",)
INJECTED = "injected-parameters"
PARAMETERS = "parameters"


def numbered(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of ``folder`` (default ``notebooks/``)."""
    found = sorted(Path(folder or FOLDER).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {folder or FOLDER}")
    return found


def clean(nb):
    """``nb`` (an nbformat notebook) without papermill's injected cell and with only the
    metadata listed in :data:`NOTEBOOK_METADATA` and :data:`CELL_METADATA`; in place, returned."""
    nb.cells = [c for c in nb.cells if INJECTED not in c.get("metadata", {}).get("tags", [])]
    for key in [k for k in nb.metadata if k not in NOTEBOOK_METADATA]:
        del nb.metadata[key]
    for cell in nb.cells:
        for key in [k for k in cell.metadata if k not in CELL_METADATA]:
            del cell.metadata[key]
        if not cell.metadata.get("tags", True):
            del cell.metadata["tags"]
    return nb


def _jupytext_config(folder: Path):
    from jupytext.config import load_jupytext_config
    config = load_jupytext_config(str(Path(folder).resolve()))
    if config is None:
        raise FileNotFoundError(f"no jupytext.toml in {folder} or above: the pairing's config "
                                f"(formats = \"ipynb,py:percent\") lives at the repository's root")
    return config


def as_script(nb, folder: Path = FOLDER) -> str:
    """The ``py:percent`` text jupytext writes for ``nb`` under the jupytext config that
    governs ``folder`` (the repository's ``jupytext.toml`` for ``notebooks/``)."""
    import jupytext
    return jupytext.writes(nb, fmt="py:percent", config=_jupytext_config(folder))


def script_of(path: Path) -> Path:
    """The paired script of a notebook (``NN_name.py`` beside ``NN_name.ipynb``)."""
    return Path(path).with_suffix(".py")


def write(nb, path: Path) -> None:
    """Write a cleaned ``nb`` to ``path`` (``.ipynb``), then let jupytext bring its paired
    script in step (what ``jupytext --sync`` does from a shell)."""
    import nbformat
    from jupytext.cli import jupytext as jupytext_cli
    _jupytext_config(Path(path).parent)
    from ..core.atomic import replace_with
    clean(nb)
    replace_with(Path(path), lambda tmp: nbformat.write(nb, str(tmp)))   # never half a notebook
    jupytext_cli(["--sync", "--quiet", str(path)])


def problems(path: Path) -> list[str]:
    """What keeps the committed pair of ``path`` (a ``.ipynb``) from the convention above:
    a missing or out-of-sync script, stray metadata, an injected cell, no parameters cell,
    no targets. Empty when all is well."""
    import jupytext
    import nbformat
    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    out = []
    script = script_of(path)
    if not script.exists():
        out.append(f"{script.name} is missing: run `jupytext --sync {path.name}` in notebooks/")
    else:
        text_nb = jupytext.read(str(script), fmt="py:percent")
        ours = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]
        theirs = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in text_nb.cells]
        if ours != theirs or script.read_text() != as_script(nb, path.parent):
            first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            out.append(f"{path.name} and {script.name} are out of sync (first difference at cell {first}): "
                       f"run `jupytext --sync {path.name}` in notebooks/")
    stray = sorted(k for k in nb.metadata if k not in NOTEBOOK_METADATA)
    if stray:
        out.append(f"{path.name}: stray notebook metadata {stray}")
    for i, cell in enumerate(nb.cells):
        extra = sorted(k for k in cell.metadata if k not in CELL_METADATA)
        if extra:
            out.append(f"{path.name}: cell {i} carries stray metadata {extra}")
        if INJECTED in cell.metadata.get("tags", []):
            out.append(f"{path.name}: cell {i} is papermill's injected-parameters cell (commit the notebook "
                       f"through `reproduce --write-back`, which drops it)")
    if sum(PARAMETERS in c.metadata.get("tags", []) for c in nb.cells) != 1:
        out.append(f"{path.name}: needs exactly one cell tagged '{PARAMETERS}'")
    if not nb.metadata.get("clamu", {}).get("targets"):
        out.append(f"{path.name}: no clamu.targets in its metadata (the figures and tables it makes)")
    return out


def targets(folder: Path | None = None) -> dict[str, str]:
    """Each target name (``fig2``, ``table1``, ...) → the stem of the notebook that makes it,
    read from the notebooks' ``clamu.targets`` metadata. A target claimed twice is an error."""
    import nbformat
    out: dict[str, str] = {}
    for path in numbered(folder):
        meta = nbformat.read(str(path), as_version=4).metadata.get("clamu", {})
        for t in meta.get("targets", []):
            if t in out:
                raise ValueError(f"target {t!r} is claimed by both {out[t]} and {path.stem}")
            out[t] = path.stem
    return out
