"""The measurements behind the report: forget orders against local models, unlearning compute
executed at several T, ratios and their growth, seeds, and where the time goes."""
import math

import pandas as pd
import pytest

from clamu_helpers import experiments as ex, timing
from clamu_helpers import unlearning_cost as uc
from clamu_helpers.settings.synthetic import SyntheticSetting


@pytest.fixture(scope="module")
def blobs():
    return SyntheticSetting(tasks=10)


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    from clamu_helpers.training.store import TaskVectorStore
    monkeypatch.setattr(ex, "_STORE", TaskVectorStore(tmp_path / "store"))


def test_forget_orders_differ_and_replay_matches_real_unlearning(blobs):
    real = ex.unlearning_orders(blobs, "merge", orders=3, schedule=[0, 5, 8], seed=0, replay="all")
    refit = ex.unlearning_orders(blobs, "merge", orders=3, schedule=[0, 5, 8], seed=0, replay="first")
    # exactness makes a refitted order score what the unlearned one scores, to the bit
    pd.testing.assert_series_equal(real["accuracy"], refit["accuracy"])
    assert (refit[refit.order > 0].replayed == "refitted").all() and refit[refit.order > 0].gradient_steps.isna().all()
    assert refit.exact.dropna().tolist() == [1.0]
    # orders are different permutations: the remaining tasks (hence local scores) differ somewhere
    from clamu_helpers.unlearning.audit import choose_forget_set
    from clamu_helpers.runtime.determinism import stable_seed
    firsts = {tuple(choose_forget_set(blobs.task_ids, 8, stable_seed(0, "forget-order", o))[:5]) for o in range(3)}
    assert len(firsts) == 3
    # the gap is the served score minus the local models' on the same remaining tasks
    assert (real["gap"] - (real["accuracy"] - real["local"])).abs().max() < 1e-12
    # merging charges one finetune's steps per forgotten task
    steps = blobs.finetune_config.steps
    assert real[(real.order == 1) & (real.unlearned == 8)].gradient_steps.item() == 8 * steps


def test_bad_orders_are_refused(blobs):
    with pytest.raises(ValueError, match="orders"):
        ex.unlearning_orders(blobs, "merge", orders=0)
    with pytest.raises(ValueError, match="replay"):
        ex.unlearning_orders(blobs, "merge", replay="sometimes")


def test_unlearning_compute_is_executed_not_counted(blobs):
    steps = blobs.finetune_config.steps
    cost = uc.unlearning_compute(blobs, ["sift", "tall", "tall:vectors=keep"], sizes=[6, 10], ks=[1, "20%"], seed=0)
    cost = cost[~((cost.tasks == 6) & (cost.k_rule == "20%"))]   # 20% of 6 rounds to 1: the same k twice
    row = cost.set_index(["method", "tasks", "k"])
    assert cost[cost.tasks == 10].k.tolist() == [1, 2] * 3   # "20%" of 10 tasks
    # SIFT retrains the forgotten task only; TALL retrains it and every remaining τ_t; "keep" stores them instead
    assert row.loc[("sift", 10, 1), "unlearn_gradient_steps"] == steps
    assert row.loc[("tall", 10, 1), "unlearn_gradient_steps"] == 10 * steps
    assert row.loc[("tall", 10, 2), "unlearn_finetunes"] == 10
    assert row.loc[("tall:vectors=keep", 10, 1), "unlearn_gradient_steps"] == steps
    assert row.loc[("tall:vectors=keep", 10, 1), "storage_bytes"] > row.loc[("tall", 10, 1), "storage_bytes"]
    # audited at the smallest T only
    assert (cost[cost.tasks == 6].exact == 1).all() and cost[cost.tasks == 10].exact.isna().all()
    ratios = uc.compute_ratios(cost, reference="sift")
    r = ratios.set_index(["method", "tasks", "k_rule"])
    assert r.loc[("tall", 6, "1"), "ratio_gradient_steps"] == 6 and r.loc[("tall", 10, "1"), "ratio_gradient_steps"] == 10
    growth = uc.ratio_growth(ratios).set_index(["method", "k_rule"])
    # TALL's ratio is T: exponent 1, and the extrapolation to 500 gives 500
    assert growth.loc[("tall", "1"), "exponent"] == pytest.approx(1.0)
    assert growth.loc[("tall", "1"), "extrapolated_at_500"] == pytest.approx(500.0)
    assert growth.loc[("tall:vectors=keep", "1"), "exponent"] == pytest.approx(0.0)


def test_unlearning_compute_refuses_unknown_methods_and_audit_modes(blobs):
    with pytest.raises(Exception, match="not registered"):
        uc.unlearning_compute(blobs, ["nope"], sizes=[4])
    with pytest.raises(Exception, match="audit"):
        uc.unlearning_compute(blobs, ["sift"], sizes=[4], audit="maybe")


def test_seeds_per_profile_and_per_seed_values(monkeypatch):
    monkeypatch.delenv("CLAMU_SEEDS", raising=False)
    assert len(ex.seeds_for("cpu")) >= 3 and len(ex.seeds_for("smoke")) >= 2
    monkeypatch.setenv("CLAMU_SEEDS", "4, 7")
    assert ex.seeds_for("cpu") == (4, 7)
    monkeypatch.setenv("CLAMU_SEEDS", "1,1")
    with pytest.raises(ValueError, match="distinct"):
        ex.seeds_for("cpu")
    monkeypatch.setenv("CLAMU_SEEDS", "one")
    with pytest.raises(ValueError, match="comma list"):
        ex.seeds_for("cpu")
    monkeypatch.delenv("CLAMU_SEEDS")
    with pytest.raises(ValueError, match="profile"):
        ex.seeds_for("huge")
    frame = ex.over_seeds(lambda s: pd.DataFrame({"x": [s, s + 1]}), [2, 0, 1])
    assert ex.per_seed(frame, lambda sub: sub.x.sum()) == [1.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="repeated"):
        ex.over_seeds(lambda s: pd.DataFrame({"x": [s]}), [1, 1])


def test_time_is_counted_exclusively_by_category(blobs):
    from clamu_helpers.unlearning.system import UnlearningSystem
    timing.reset()
    UnlearningSystem(blobs, "tall").fit()
    snap = timing.snapshot()
    assert snap["finetuning"] > 0 and snap["mask optimisation"] > 0 and snap["evaluation"] > 0
    parts = sum(v for k, v in snap.items() if k not in ("wall",))
    assert parts == pytest.approx(snap["wall"], abs=0.3)


# -- provenance ---------------------------------------------------------------------------------
def test_rows_from_another_source_digest_are_flagged_in_the_report(tmp_path):
    import json

    from clamu_helpers import claims, plots, provenance
    from clamu_helpers.reproduction.reproduce import write_report
    rows = [claims.check("fig3-clamu", [0.05, 0.06, 0.07])]
    plots.report_rows("01_now", rows, "smoke", out=tmp_path)
    plots.report_rows("02_old", rows, "smoke", out=tmp_path)
    old = tmp_path / "report" / "02_old.json"
    data = json.loads(old.read_text())
    assert data["source_digest"] == provenance.source_digest() and data["rows"][0]["source_digest"]
    data["source_digest"] = "0" * 64                        # as if it ran at another source
    old.write_text(json.dumps(data))
    results = [{"notebook": nb, "ok": True, "seconds": 1.0, "error": ""} for nb in ("01_now", "02_old")]
    text = write_report(tmp_path, "smoke", results).read_text()
    assert "Rows from another source" in text and "02_old (`0000000000000000`)" in text
    assert "01_now (" not in text.split("Rows from another source")[1].split("\n")[0]
    assert "reproduces (other source)" in text


def test_tables_and_figures_record_the_commit_and_source_digest(tmp_path):
    import json

    import pandas as pd

    from clamu_helpers import plots, provenance
    plots.save_table(pd.DataFrame({"a": [1, 2]}), "t", "smoke", out=tmp_path)
    csv = pd.read_csv(tmp_path / "t.csv")
    meta = json.loads((tmp_path / "t.meta.json").read_text())
    assert list(csv.columns) == ["a", "commit", "source_digest"]
    assert (csv.source_digest == provenance.source_digest()).all() and meta["source_digest"] == provenance.source_digest()
    assert "commit" in meta and not list(tmp_path.glob(".*.tmp"))   # written atomically, no leftovers


def test_the_source_digest_follows_the_library_and_notebook_sources(tmp_path):
    from clamu_helpers import provenance
    (tmp_path / "clamu_helpers").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "clamu_helpers" / "a.py").write_text("x = 1\n")
    (tmp_path / "notebooks" / "00_x.py").write_text("# %%\n")
    files = provenance.source_files(tmp_path)
    before = provenance.digest_of(files, tmp_path)
    (tmp_path / "notebooks" / "00_x.py").write_text("# %%\nprint(1)\n")
    assert provenance.digest_of(files, tmp_path) != before


# -- benchmark results read into the report -------------------------------------------------------
def test_search_agreement_and_unlearning_benchmarks_become_report_rows(tmp_path):
    import json

    from clamu_helpers import bench_results, claims
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    assert bench_results.search_agreement_rows("cpu", root=tmp_path) == []
    assert bench_results.unlearning_compute_values(root=tmp_path) is None
    rows = [{"setting": s, "seed": sd, "agree": sd != 1, "difference": d,
             "full": {"alpha": 0.1, "mask_lr": 100.0, "mask_steps": 900},
             "halving": {"alpha": 0.1 if sd != 1 else 0.3, "mask_lr": 100.0, "mask_steps": 300}}
            for (s, sd, d) in [("a", 0, 0.01), ("a", 1, -0.02), ("b", 0, 0.0)]]
    summary = {"pairs": 3, "agree": 2, "alpha_agree": 2, "mask_steps_ratio": 1 / 3}
    (tmp_path / "benchmarks" / "results" / "search_agreement.json").write_text(
        json.dumps({"clusters": 8, "rows": rows, "summary": summary}))
    (row,) = bench_results.search_agreement_rows("cpu", root=tmp_path)
    claims.validate_row(row)
    assert row["interval"]["values"] == [0.01, -0.02, 0.0] and "agree in 2 of 3" in row["ours"]
    ratios = [{"method": m, "seed": sd, "tasks": t, "k": 1, "k_rule": "1", "ratio_seconds": r}
              for sd in (0, 1) for t in (50, 500) for m, r in (("tall", 10.0 * t / 50 + sd), ("emr", 5.0))]
    (tmp_path / "benchmarks" / "results" / "bench_unlearning_compute_seeds.json").write_text(
        json.dumps({"args": {"methods": ["sift:scale=1/T"], "setting": "x"}, "ratios": ratios}))
    values, args = bench_results.unlearning_compute_values(root=tmp_path)
    assert values == [100.0, 101.0] and args["tasks"] == 500


def test_report_only_rewrites_the_report_from_saved_rows(tmp_path):
    import json

    from clamu_helpers import claims, plots
    from clamu_helpers.reproduction.reproduce import report_only
    assert report_only("smoke", out=str(tmp_path)) == 2                  # nothing run yet: a clear no
    plots.report_rows("01_x", [claims.check("fig3-clamu", [0.05, 0.06, 0.07])], "smoke", out=tmp_path)
    (tmp_path / "timings.json").write_text(json.dumps({
        "profile": "smoke", "last_run": None, "last_full_run": None,
        "notebooks": [{"notebook": "01_x", "ok": True, "seconds": 3.0, "error": ""}]}))
    assert report_only("smoke", out=str(tmp_path)) == 0
    assert "| ClAMU > TALL, EMR | 0.060 ± 0.025" in (tmp_path / "REPORT.md").read_text()


def test_report_protocol_reads_the_declared_choices(monkeypatch):
    from clamu_helpers import profiles
    from clamu_helpers.reproduction import reproduce
    text = "\n".join(reproduce.protocol_lines("cpu"))
    assert "search_on=tasks" in text and f"halving_reduction={ex.CLAMU_PROTOCOL['halving_reduction']}" in text
    for nb, seeds in profiles.MORE_SEEDS["cpu"].items():
        assert f"{nb} {len(seeds)}" in text
    monkeypatch.setitem(ex.CLAMU_PROTOCOL, "halving_reduction", 7)   # declared once: the report follows
    assert "halving_reduction=7" in "\n".join(reproduce.protocol_lines("cpu"))
    assert "MORE_SEEDS" not in "\n".join(reproduce.protocol_lines("smoke"))


def test_the_commit_is_modified_by_a_source_change_not_by_a_written_back_notebook(tmp_path):
    """``reproduce --write-back`` rewrites notebooks/*.ipynb while the run goes on: that is an
    output, not a source, and must not mark the run's commit ``+modified``; a library or notebook
    script change must."""
    import subprocess
    from clamu_helpers import provenance

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "clamu_helpers" / "core").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    for f in ("clamu_helpers/core/x.py", "notebooks/01_a.py", "notebooks/01_a.ipynb"):
        (tmp_path / f).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    assert not provenance.commit(tmp_path).endswith("+modified")
    (tmp_path / "notebooks" / "01_a.ipynb").write_text("2\n")
    assert not provenance.commit(tmp_path).endswith("+modified")
    (tmp_path / "clamu_helpers" / "core" / "x.py").write_text("2\n")
    assert provenance.commit(tmp_path).endswith("+modified")
