"""The committed ``cpu`` outputs are one whole run at one source: every notebook was executed
top to bottom in one kernel (execution counts 1..n in order, none edited or run alone), and
every table, figure record and timing row names the same source digest as the run's own
record in ``timings.json`` (``last_full_run``)."""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from clamu_helpers import notebook_files

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "figures" / "cpu"
NOTEBOOKS = notebook_files.numbered()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_ran_top_to_bottom_in_one_kernel(path):
    """Counts 1..n in order, with one number skipped right after the ``parameters`` cell: papermill
    ran its injected parameters cell there, and ``reproduce --write-back`` removed that cell
    (the counts are left as the kernel gave them)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code, f"{path.name} has no code"
    counts = [c.execution_count for c in code]
    params = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: one parameters cell expected"
    expected = [i + 1 if i <= params[0] else i + 2 for i in range(len(code))]
    assert counts == expected, f"{path.name}: execution counts {counts}"


@pytest.fixture(scope="module")
def timings():
    return json.loads((CPU / "timings.json").read_text())


def test_the_cpu_outputs_come_from_one_whole_run(timings):
    full = timings["last_full_run"]
    assert full is not None, "figures/cpu holds no whole run"
    assert sorted(full["notebooks"]) == sorted(p.stem for p in NOTEBOOKS)
    rows = {r["notebook"]: r for r in timings["notebooks"]}
    assert set(rows) == {p.stem for p in NOTEBOOKS}
    assert all(r["ok"] for r in rows.values())
    assert {r.get("source_digest") for r in rows.values()} == {full["source_digest"]}


def test_every_table_and_record_names_the_run_source(timings):
    digest = timings["last_full_run"]["source_digest"]
    metas = sorted(CPU.glob("*.meta.json"))
    csvs = sorted(CPU.glob("*.csv"))
    assert metas and csvs
    for meta in metas:
        assert json.loads(meta.read_text()).get("source_digest") == digest, meta.name
    for csv in csvs:
        assert set(pd.read_csv(csv, usecols=["source_digest"]).source_digest) == {digest}, csv.name
