"""Committed notebooks let CI choose their profile (nbval runs them at smoke)."""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_profile_comes_from_the_environment(path):
    nb = nbformat.read(path, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert any("parameters" in t for t in tags), "needs a papermill parameters cell"
    for cell in nb.cells:
        if cell.cell_type == "code":
            for line in cell.source.splitlines():
                if re.match(r"\s*profile\s*=", line):
                    assert "os.environ.get(\"CLAMU_PROFILE\"" in line, f"hard-coded profile: {line}"



def test_notebooks_are_built_from_the_script():
    """scripts/build_notebooks.py is the notebooks' source of truth: the committed cells match it."""
    import importlib.util
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        cells = [c.source for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert cells == [c.source for c in build.NOTEBOOKS[path.stem]], \
            f"{path.name} differs from scripts/build_notebooks.py: rebuild it and re-run reproduce --write-back"
