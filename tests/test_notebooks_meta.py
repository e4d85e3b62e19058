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

