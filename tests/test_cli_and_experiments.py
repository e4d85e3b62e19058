import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from clamu_helpers import experiments as ex
from clamu_helpers.unlearning.audit import audit, choose_forget_set
from clamu_helpers.core.errors import UnknownNameError
from clamu_helpers.reproduction.reproduce import _notebooks, write_report

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "clamu_helpers", *args], capture_output=True, text=True, env=ENV)


def test_audit_command_prints_json_and_exits_zero_when_exact():
    r = _cli("audit", "--setting", "synthetic", "--profile", "smoke", "--unlearn", "2", "--seed", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["exact"] is True and out["retrain_hashes_match"] is True
    assert out["digest_unlearned"] == out["digest_from_scratch"]
    assert out["tasks"] == 8 and len(out["unlearned"]) == 2


def test_audit_detects_a_non_exact_method(tiny):
    from clamu_helpers.methods import Method, register
    from clamu_helpers.methods.basic import Merge

    @register("leaky-test")
    class Leaky(Merge):  # remembers how many tasks it ever saw: not a function of the remaining set
        def fit(self, system, vectors):
            self.seen = len(vectors)

        def refresh(self, system, removed, retrained):
            pass

        def state(self, system):
            return {}, {"seen": self.seen}

    try:
        out = audit(tiny, "leaky-test", unlearn=1, seed=0)
        assert out["exact"] is False and out["ledger_exact"] is True
    finally:
        from clamu_helpers.methods import METHODS
        METHODS.pop("leaky-test")


def test_settings_command_lists_availability():
    r = _cli("settings", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["setting"]: row for row in json.loads(r.stdout)}
    assert rows["synthetic"]["available"] is True
    assert {"images-uniform", "images-label-subsets"} <= set(rows)


def test_bad_arguments_are_reported():
    r = _cli("audit", "--setting", "synthetic", "--unlearn", "99")
    assert r.returncode != 0 and "between 1 and 7" in r.stderr
    with pytest.raises(ValueError, match="unknown setting"):
        from clamu_helpers.settings import get_setting
        get_setting("nope")


def test_forget_set_is_seeded_and_distinct():
    ids = [f"t{i}" for i in range(20)]
    a = choose_forget_set(ids, 5, 1)
    assert a == choose_forget_set(ids, 5, 1) != choose_forget_set(ids, 5, 2)
    assert len(set(a)) == 5


def test_merging_at_scale_frame(tiny):
    df = ex.merging_at_scale(tiny, sizes=[1, 4, 8])
    wide = df.pivot_table(index="tasks", columns="model", values="accuracy")
    assert list(wide.index) == [1, 4, 8]
    # one merged model is the local model itself
    assert wide.loc[1, "merged"] == pytest.approx(wide.loc[1, "local"])
    assert (wide["local"] >= wide["merged"]).all()


def test_unlearning_orders_count_steps(tiny):
    df = ex.unlearning_orders(tiny, "merge", orders=1, schedule=[0, 3, 6], replay="all", local=False)
    steps = tiny.finetune_config.steps
    assert list(df["remaining"]) == [8, 5, 2]
    assert list(df["gradient_steps"]) == [0, 3 * steps, 6 * steps]


def test_cluster_counts_scale_the_drafts_k():
    assert ex.cluster_counts(500) == [4, 20, 100]
    assert all(2 <= k < 12 for k in ex.cluster_counts(12))


def test_report_puts_paper_and_ours_side_by_side(tmp_path):
    from clamu_helpers import claims, plots
    rows = [claims.check("fig3-clamu", [0.05, 0.06, 0.07]), claims.check("fig3-clamu", [0.01, -0.02, 0.0])]
    plots.report_rows("01_x", rows, "smoke", out=tmp_path)
    text = write_report(tmp_path, "smoke", [{"notebook": "01_x", "ok": True, "seconds": 1.0, "error": ""},
                                           {"notebook": "02_y", "ok": False, "seconds": 2.0, "error": "boom"}]).read_text()
    section = text.split("## 01_x")[1]
    assert "| ClAMU > TALL, EMR | 0.060 ± 0.025" in section and section.count("| reproduces |") == 1
    assert "| inconclusive |" in section           # fig3 has no size: lo < 0 ≤ hi
    assert "FAILED: boom" in text


def test_only_selects_notebooks_by_the_targets_they_declare(tmp_path):
    import nbformat
    from nbformat.v4 import new_notebook
    from clamu_helpers import notebook_files
    for n, targets in (("00_quickstart", ["quickstart"]), ("01_when_is_merging_scalable", ["fig2"]),
                       ("04_clamu", ["fig3", "fig5"])):
        nbformat.write(new_notebook(metadata={"clamu": {"targets": targets}}), tmp_path / f"{n}.ipynb")
    assert [p.stem for p in _notebooks(tmp_path, "fig2,fig5")] == ["01_when_is_merging_scalable", "04_clamu"]
    assert [p.stem for p in _notebooks(tmp_path, "04")] == ["04_clamu"]
    with pytest.raises(UnknownNameError, match="unknown target 'fig99'.*'fig3'"):
        _notebooks(tmp_path, "fig99")
    nbformat.write(new_notebook(metadata={"clamu": {"targets": ["fig2"]}}), tmp_path / "05_other.ipynb")
    with pytest.raises(ValueError, match="'fig2' is claimed by both 01_when_is_merging_scalable and 05_other"):
        notebook_files.targets(tmp_path)


def test_the_committed_notebooks_declare_every_target_once():
    from clamu_helpers import notebook_files
    targets = notebook_files.targets()
    assert {"fig2", "fig3", "fig4", "fig5", "table1", "table2", "table3", "sift"} <= set(targets)
    assert set(targets.values()) == {p.stem for p in notebook_files.numbered()}


def _notebook(path, *sources):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    cells = [new_code_cell('profile = "smoke"')]
    cells[0].metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=cells + [new_code_cell(s) for s in sources],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)


def test_reproduce_runs_notebooks_at_once_and_survives_a_failure(tmp_path, capfd):
    from clamu_helpers.reproduction.reproduce import reproduce
    nbs, out, marker = tmp_path / "nbs", tmp_path / "out", tmp_path / "marker"
    nbs.mkdir()
    # 00 can only finish if 01 runs while it waits: proof that two notebooks run at once
    _notebook(nbs / "00_waits.ipynb", f'''import time, pathlib
for _ in range(600):
    if pathlib.Path({str(marker)!r}).exists():
        break
    time.sleep(0.1)
assert pathlib.Path({str(marker)!r}).exists(), "ran alone"''')
    _notebook(nbs / "01_marks.ipynb", f'import pathlib; pathlib.Path({str(marker)!r}).write_text(profile)')
    _notebook(nbs / "02_fails.ipynb", 'raise ValueError("broken result")')
    before = {k: os.environ.get(k) for k in ("CLAMU_PROFILE", "CLAMU_FIGURES", "OMP_NUM_THREADS")}
    code = reproduce(profile="smoke", notebooks_dir=str(nbs), out=str(out), jobs=2)
    assert {k: os.environ.get(k) for k in before} == before   # the caller's environment is left as it was
    printed, console_err = capfd.readouterr()
    assert code == 1 and "FAIL 02_fails" in printed and "2 at once" in printed
    assert "running over TCP" not in console_err   # kernels' warnings go to the notebooks' logs
    assert marker.read_text() == "smoke"   # papermill injected the profile
    timings = json.loads((out / "timings.json").read_text())
    assert [r["ok"] for r in timings["notebooks"]] == [True, True, False]
    assert timings["last_run"]["jobs"] == 2 and timings["last_run"]["wall_seconds"] > 0
    assert "ValueError" in timings["notebooks"][2]["error"]
    assert (out / "notebooks" / "01_marks.ipynb").exists() and "broken result" in (out / "logs" / "02_fails.log").read_text()
    assert "Executing Cell" in (out / "logs" / "01_marks.log").read_text()   # where a long notebook stands
    report = (out / "REPORT.md").read_text()
    assert "2 notebooks at once" in report and "FAILED" in report
    # an --only run updates its notebook and keeps the record of the full run
    assert reproduce(profile="smoke", notebooks_dir=str(nbs), out=str(out), only="01_marks", jobs=1) == 0
    timings = json.loads((out / "timings.json").read_text())
    assert timings["last_run"]["notebooks"] == ["01_marks"] and timings["last_full_run"]["jobs"] == 2
    assert len(timings["notebooks"]) == 3
    report = (out / "REPORT.md").read_text()
    assert "Last run of every notebook" in report and "Last run (01_marks)" in report


def test_status_line_says_cell_progress_and_time_left(tmp_path):
    """What reproduce shows for a running notebook, read from its papermill log."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from clamu_helpers.reproduction.reproduce import status_line
    nb = tmp_path / "04_x.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(str(i)) for i in range(5)]), nb)
    log = tmp_path / "04_x.log"
    log.write_text("2026-12-03 08:00:00,000 INFO Executing Cell 1-----\n"
                   "2026-12-03 08:00:01,000 INFO Executing Cell 3-----\n"
                   "2026-12-03 08:00:02,000 INFO finetune images-label-subsets:  45%|####5     | 90/200 [00:10<00:12]\r"
                   "2026-12-03 08:00:03,000 INFO \rfinetune images-label-subsets:  50%|#####     | 100/200 [00:11<00:11]\n")
    import datetime
    t0 = datetime.datetime(2026, 12, 3, 8, 0, 0).timestamp()
    line = status_line(log, nb, expected=600, now=t0 + 130)
    assert line == "04_x · cell 3/6 · finetune images-label-subsets 100/200 · 2:10 elapsed, ~7:50 left"
    assert status_line(log, nb, expected=100, now=t0 + 130).endswith("0:30 over the last run")
    with open(log, "a") as fh:   # a new cell started: the old bar is not this cell's
        fh.write("2026-12-03 08:00:05,000 INFO Executing Cell 4-----\n")
    assert status_line(log, nb, now=t0 + 5) == "04_x · cell 4/6 · 0:05 elapsed"
    assert status_line(tmp_path / "missing.log", nb) == "04_x: starting"


def test_the_watchdog_stops_a_stopped_kernel_runs_it_once_more_and_spares_a_busy_one(tmp_path, capfd):
    """A kernel with no output and no CPU for --stall-after seconds is stopped and its notebook
    run once more; a kernel that computes without printing, or idles but prints, is left alone."""
    from clamu_helpers.reproduction.reproduce import reproduce
    nbs, out, marker = tmp_path / "nbs", tmp_path / "out", tmp_path / "stopped-once"
    nbs.mkdir()
    _notebook(nbs / "00_stops_once.ipynb", f'''import pathlib, time
m = pathlib.Path({str(marker)!r})
if not m.exists():
    m.write_text("1")
    time.sleep(10**6)''', 'print("second run done")')
    _notebook(nbs / "01_stops_always.ipynb", "import time; time.sleep(10**6)")
    _notebook(nbs / "02_busy_quietly.ipynb", "import time\nt = time.time()\nwhile time.time() - t < 8:\n    pass")
    _notebook(nbs / "03_idle_but_printing.ipynb", "import time\nfor i in range(8):\n    print(i, flush=True)\n    time.sleep(1)")
    code = reproduce(profile="smoke", notebooks_dir=str(nbs), out=str(out), jobs=4, stall_after=3)
    printed, _ = capfd.readouterr()
    assert code == 1
    rows = {r["notebook"]: r for r in json.loads((out / "timings.json").read_text())["notebooks"]}
    assert rows["00_stops_once"]["ok"] and len(rows["00_stops_once"]["stalled"]) == 1
    assert "at cell 3" in rows["00_stops_once"]["stalled"][0]   # 1: parameters, 2: papermill's injected cell
    assert "second run done" in (out / "logs" / "00_stops_once.log").read_text()
    bad = rows["01_stops_always"]
    assert not bad["ok"] and len(bad["stalled"]) == 2 and bad["error"].startswith("stalled: no output and no CPU")
    assert "stalled again" in bad["error"] and "FAIL 01_stops_always" in printed
    for spared in ("02_busy_quietly", "03_idle_but_printing"):
        assert rows[spared]["ok"] and "stalled" not in rows[spared]
    report = (out / "REPORT.md").read_text()
    assert "The watchdog stopped this notebook's kernel once" in report and "FAILED: stalled" in report


def test_stall_after_must_not_be_negative(tmp_path):
    from clamu_helpers.core.errors import ClamuError
    from clamu_helpers.reproduction.reproduce import reproduce
    with pytest.raises(ClamuError, match="--stall-after must be 0"):
        reproduce(profile="smoke", notebooks_dir=str(tmp_path), out=str(tmp_path / "o"), stall_after=-1)
