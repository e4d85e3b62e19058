"""The notebooks as files: each .ipynb is paired with a py:percent script (jupytext), carries
no stray metadata and no injected cell, and takes its profile from the environment."""
import ast
import re
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from clamu_helpers import notebook_files

NOTEBOOKS = notebook_files.numbered()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_profile_comes_from_the_environment(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for line in cell.source.splitlines():
                if re.match(r"\s*profile\s*=", line):
                    assert "os.environ.get(\"CLAMU_PROFILE\"" in line, f"hard-coded profile: {line}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_pair_is_in_sync_and_clean(path):
    assert notebook_files.problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_only_tell_the_story(path):
    """Logic lives in the library, tested there: no notebook defines a function or a class (a
    lambda handed to ``over_seeds`` is an argument, not a helper), and the setup is one import."""
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))   # magics
    defined = [n.name for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == [], f"{path.name} defines {defined}: move them into clamu_helpers"
    assert "from clamu_helpers.notebook import *" in code


def test_no_script_is_left_without_its_notebook():
    scripts = sorted(notebook_files.FOLDER.glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in scripts] == [p.stem for p in NOTEBOOKS]


def _pair(tmp_path, edit=None):
    """A clean pair written the way reproduce --write-back writes one, then ``edit`` applied
    to the notebook file alone."""
    params = new_code_cell('import os\nprofile = os.environ.get("CLAMU_PROFILE", "cpu")')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# title"), params, new_code_cell("print(1)")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                "clamu": {"targets": ["fig9"]}})
    path = tmp_path / "09_x.ipynb"
    shutil.copy(notebook_files.ROOT / "jupytext.toml", tmp_path)   # a notebooks folder with the repo's pairing
    notebook_files.write(nb, path)
    if edit:
        nb = nbformat.read(path, as_version=4)
        edit(nb)
        nbformat.write(nb, path)
    return path


def test_a_clean_pair_passes_and_its_script_reads_like_code(tmp_path):
    path = _pair(tmp_path)
    assert notebook_files.problems(path) == []
    text = notebook_files.script_of(path).read_text()
    assert '# %% tags=["parameters"]' in text and "print(1)" in text and "targets:" in text


@pytest.mark.parametrize("edit, message", [
    (lambda nb: setattr(nb.cells[2], "source", "print(2)"), "out of sync (first difference at cell 2)"),
    (lambda nb: nb.metadata.update(papermill={"duration": 1.0}), "stray notebook metadata ['papermill']"),
    (lambda nb: nb.cells[2].metadata.update(execution={"iopub.status.busy": "x"}), "cell 2 carries stray metadata"),
    (lambda nb: nb.metadata.pop("clamu"), "no clamu.targets"),
    (lambda nb: nb.cells[1].metadata.update(tags=[]), "exactly one cell tagged 'parameters'"),
])
def test_each_kind_of_drift_is_named(tmp_path, edit, message):
    problems = notebook_files.problems(_pair(tmp_path, edit))
    assert any(message in p for p in problems), problems


def test_an_executed_notebook_is_committed_without_what_papermill_added(tmp_path):
    """papermill's injected cell and metadata go; outputs stay; the script does not change."""
    path = _pair(tmp_path)
    script = notebook_files.script_of(path).read_text()
    nb = nbformat.read(path, as_version=4)
    injected = new_code_cell('profile = "smoke"')
    injected.metadata.update(tags=["injected-parameters"], papermill={"status": "completed"})
    nb.cells.insert(2, injected)
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.metadata["papermill"] = {"parameters": {"profile": "smoke"}}
    assert any("injected-parameters" in p for p in notebook_files.problems(_write(nb, path)))
    notebook_files.write(nb, path)
    assert notebook_files.problems(path) == []
    kept = nbformat.read(path, as_version=4)
    assert len(kept.cells) == 3 and kept.cells[2].outputs[0]["text"] == "1\n"
    assert notebook_files.script_of(path).read_text() == script


def test_a_folder_without_the_pairing_config_is_refused_by_name(tmp_path):
    nb = new_notebook(cells=[new_code_cell("print(1)")])
    with pytest.raises(FileNotFoundError, match="no jupytext.toml"):
        notebook_files.write(nb, tmp_path / "01_x.ipynb")


def _write(nb, path):
    nbformat.write(nb, path)
    return path
