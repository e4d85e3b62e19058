"""The claim checks can say no: three verdicts from intervals, and no verdict without one."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from clamu_helpers import claims as C
from clamu_helpers import experiments as ex

ROOT = Path(__file__).resolve().parents[1]


def frame(feature_minus_random):
    """A tiny Figure 4 results frame: per seed, feature and random cluster accuracy."""
    rows = []
    for seed, gain in enumerate(feature_minus_random):
        rows += [{"seed": seed, "clustering": "random", "accuracy": 0.40},
                 {"seed": seed, "clustering": "features", "accuracy": 0.40 + gain}]
    return pd.DataFrame(rows)


def gain(sub):
    acc = sub.set_index("clustering")["accuracy"]
    return acc["features"] - acc["random"]


@pytest.mark.parametrize("gains, expected", [
    ((0.20, 0.22, 0.18), C.REPRODUCES),        # inside the paper's +12–30 points
    ((0.05, 0.06, 0.04), C.DIRECTION_ONLY),    # excludes 0, short of +12
    ((0.02, -0.03, 0.01), C.DOES_NOT),         # includes 0
    ((-0.10, -0.12, -0.11), C.DOES_NOT),       # the opposite direction
    ((0.40, 0.45, 0.42), C.REPRODUCES),        # beyond the band in the claimed direction
])
def test_verdicts_from_a_results_frame(gains, expected):
    values = ex.per_seed(frame(gains), gain)
    row = C.check("fig4-features", values)
    assert row["verdict"] == expected
    assert row["interval"]["n"] == 3
    C.validate_row(row)


def test_interval_is_student_t_over_seeds():
    iv = C.t_interval([1.0, 2.0, 3.0])
    # sd = 1, n = 3, t_{.975, 2} = 4.303
    assert iv.mean == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    one = C.t_interval([0.5])
    assert one.n == 1 and one.lo == one.hi == 0.5
    with pytest.raises(ValueError, match="NaN"):
        C.t_interval([0.1, float("nan")])


def test_ratio_claims_are_judged_on_the_log_scale():
    # three loaded wall-time ratios (notebook 06, cpu): every seed far above 1×
    values = [578.6, 544.9, 188.5]
    linear = C.t_interval(values)
    assert linear.lo < 0                                    # a linear interval would read "no effect"
    row = C.check("sift-compute", values)
    iv = row["interval"]
    assert iv["log"] and iv["lo"] > 1 and iv["hi"] < 2000
    logs = [math.log(v) for v in values]
    assert iv["mean"] == pytest.approx(math.exp(sum(logs) / 3))   # the geometric mean
    assert row["verdict"] == C.INCONCLUSIVE                 # above 1×, 250× neither reached nor ruled out
    assert "×/÷" in row["ours"] and "geometric mean" in row["ours"]
    assert C.check("sift-compute", [400.0, 420.0, 390.0])["verdict"] == C.REPRODUCES
    assert C.check("sift-compute", [0.5, 3.0, 1.2])["verdict"] == C.DOES_NOT
    C.validate_row(row)
    # a row may not claim a scale its claim does not have, nor an interval its values do not give
    with pytest.raises(ValueError, match="not a ratio"):
        C.validate_row({**C.check("fig4-features", [0.2, 0.21, 0.19]),
                        "interval": {**C.check("fig4-features", [0.2, 0.21, 0.19])["interval"], "log": True}})
    with pytest.raises(ValueError, match="does not follow"):
        C.validate_row({**row, "interval": {**iv, "log": False}})
    with pytest.raises(ValueError, match="> 0"):
        C.t_interval([2.0, 0.0, 3.0], log=True)


def test_a_wide_interval_straddling_the_band_is_inconclusive():
    # mean +0.15 is inside the band, but the interval reaches below +0.12 (and below 0)
    row = C.check("fig4-features", [0.05, 0.15, 0.25])
    assert row["verdict"] == C.INCONCLUSIVE
    assert "no effect is excluded" in row["why"] and "inside the band" in row["why"]


@pytest.mark.parametrize("key, values, expected", [
    # fig4: null 0, band starts at +0.12
    ("fig4-features", (0.20, 0.22, 0.18), C.REPRODUCES),        # lo ≥ L
    ("fig4-features", (0.05, 0.06, 0.04), C.DIRECTION_ONLY),    # 0 < lo, hi < L
    ("fig4-features", (0.02, -0.03, 0.01), C.DOES_NOT),         # hi < L, lo ≤ 0
    ("fig4-features", (-0.10, -0.12, -0.11), C.DOES_NOT),       # the opposite direction
    ("fig4-features", (0.10, 0.16, 0.13), C.INCONCLUSIVE),      # lo < L ≤ hi, effect present
    # a directional claim without a size: L = n = 0, direction only cannot happen
    ("fig3-clamu", (0.01, 0.02, 0.015), C.REPRODUCES),
    ("fig3-clamu", (-0.01, 0.02, 0.005), C.INCONCLUSIVE),
    ("fig3-clamu", (-0.01, -0.02, -0.015), C.DOES_NOT),
    # negative direction (mirrored): the merge keeps at most a quarter (null 1)
    ("fig2-label-subsets", (0.10, 0.12, 0.11), C.REPRODUCES),
    ("fig2-label-subsets", (0.50, 0.55, 0.52), C.DIRECTION_ONLY),
    ("fig2-label-subsets", (1.05, 1.10, 1.07), C.DOES_NOT),
    ("fig2-label-subsets", (0.10, 0.40, 0.25), C.INCONCLUSIVE),
    # equivalence: inside / entirely outside / over an edge of ±3 points
    ("table5-clamu-equal", (0.001, -0.002, 0.0), C.REPRODUCES),
    ("table5-clamu-equal", (0.05, 0.06, 0.055), C.DOES_NOT),
    ("table5-clamu-equal", (0.0, 0.04, 0.02), C.INCONCLUSIVE),
])
def test_four_outcomes(key, values, expected):
    row = C.check(key, values)
    assert row["verdict"] == expected, row["ours"]
    C.validate_row(row)
    assert row["seeds"] == 3 and row["detectable"] > 0
    if expected != C.REPRODUCES:
        assert row["why"]


def test_reasons_are_built_from_the_rows_numbers():
    # a mean inside the band with a wide interval is not "smaller than the band"
    row = C.check("fig5-clamu", [0.02, 0.12, 0.16])           # band +0.05–0.20, mean 0.10
    assert row["verdict"] == C.INCONCLUSIVE
    assert "smaller" not in row["why"] and "inside the band" in row["why"] and "[" in row["why"]
    short = C.check("fig5-clamu", [0.02, 0.025, 0.03])
    assert short["verdict"] == C.DIRECTION_ONLY and "short of the band's 0.050" in short["why"]
    # a notebook's reason is kept only where its condition holds
    local_moved = 0.001
    r = C.check("table2-sent140", [0.0, 0.01, -0.01],
                why=[(abs(local_moved) > 0.01, "the change follows which tasks remain"),
                     (abs(local_moved) <= 0.01, f"the local models barely move ({local_moved:+.3f})")])
    assert "follows which tasks remain" not in r["why"] and "barely move" in r["why"]


def test_a_claim_that_does_not_reproduce_says_which_way_its_interval_lies():
    # "merged > local" (edge = null = 0): an interval wholly below 0 excludes 0; it must not
    # read "does not exclude 0.000" (the REPORT of one run said exactly that)
    opposite = C.check("fig2-uniform", [-0.05, -0.04, -0.03, -0.045, -0.035])
    assert opposite["verdict"] == C.DOES_NOT
    assert "opposite to the paper's" in opposite["why"] and "still holds" not in opposite["why"]
    assert "does not exclude" not in opposite["why"]
    # band +0.05–0.20 ruled out, no effect still possible: both said, and where the mean points
    flat = C.check("fig5-clamu", [-0.01, 0.01, 0.0, 0.005, -0.004])
    assert flat["verdict"] == C.DOES_NOT
    assert "rules out the band's 0.050" in flat["why"] and "still holds 0.000" in flat["why"]
    assert "opposite" not in flat["why"]
    # a direction without a size, undecided: no "band's 0.000", says which way the mean points
    open_ = C.check("fig2-uniform", [-0.02, 0.01, 0.04, 0.03, 0.0])
    assert open_["verdict"] == C.INCONCLUSIVE
    assert "band" not in open_["why"] and "holds 0.000" in open_["why"] and "the paper's way" in open_["why"]
    assert "the other way" in C.check("fig2-uniform", [0.02, -0.01, -0.04, -0.03, 0.0])["why"]


def test_seeds_to_settle_an_inconclusive_claim():
    iv = C.t_interval([0.10, 0.16, 0.13])                     # mean 0.13, sd 0.03, L = 0.12
    n = C.seeds_to_settle(iv, 0.12)
    assert n is not None and n > 3
    bigger = C.t_interval([0.13 + 0.03 * z for z in (-1, 1, 0, -1, 1, 0) * (n // 6 + 1)][:max(n, 3)])
    assert bigger.lo > 0.12 or n == C.MAX_SEEDS              # at that many seeds the interval clears L
    assert C.seeds_to_settle(C.t_interval([0.12, 0.12 + 1e-9, 0.12 - 1e-9]), 0.12) is None


def test_negative_and_equality_claims():
    # fig2 (ii): the merge keeps a share of the finetuning gain; the claim is that it keeps little
    assert C.check("fig2-label-subsets", [0.10, 0.12, 0.11])["verdict"] == C.REPRODUCES
    assert C.check("fig2-label-subsets", [0.50, 0.55, 0.52])["verdict"] == C.DIRECTION_ONLY
    assert C.check("fig2-label-subsets", [1.05, 1.10, 1.07])["verdict"] == C.DOES_NOT
    # "about equal": inside ±3 points, or not
    assert C.check("table5-clamu-equal", [0.001, -0.002, 0.0])["verdict"] == C.REPRODUCES
    assert C.check("table5-clamu-equal", [0.05, 0.06, 0.055])["verdict"] == C.DOES_NOT


def test_one_seed_gives_no_verdict():
    assert C.check("fig3-clamu", [0.1])["verdict"] == C.NOT_JUDGED


def test_rows_whose_verdict_does_not_follow_from_the_interval_are_refused(tmp_path):
    from clamu_helpers import plots
    row = C.check("fig4-features", [0.02, -0.03, 0.01])
    forged = {**row, "verdict": C.REPRODUCES}
    with pytest.raises(ValueError, match="its interval gives"):
        C.validate_row(forged)
    with pytest.raises(ValueError, match="its interval gives"):
        plots.report_rows("xx", [forged], "smoke", out=tmp_path)
    moved = {**row, "interval": {**row["interval"], "lo": 0.5}}
    with pytest.raises(ValueError, match="does not follow from its values"):
        C.validate_row(moved)
    no_interval = {k: v for k, v in row.items() if k != "interval"}
    with pytest.raises(ValueError, match="no interval"):
        C.validate_row(no_interval)
    with pytest.raises(ValueError, match="no verdict"):
        C.validate_row({**C.arithmetic("draft counting", "374.5×"), "verdict": C.REPRODUCES})


def test_bad_claims_are_refused():
    with pytest.raises(KeyError, match="unknown claim"):
        C.check("fig9", [1, 2])
    with pytest.raises(ValueError, match="wrong side"):
        C.Claim("x", "s", "st", "q", "p", (-1.0, 1.0), direction=1)
    with pytest.raises(ValueError, match="lo > hi"):
        C.Claim("x", "s", "st", "q", "p", (1.0, 0.0))


def _committed_rows():
    for path in sorted(ROOT.glob("figures/*/report/*.json")):
        data = json.loads(path.read_text())
        rows = data["rows"] if isinstance(data, dict) else data
        yield path, rows


def test_every_committed_report_row_has_its_verdict_from_an_interval():
    for path, rows in _committed_rows():
        for row in rows:
            if "kind" in row:
                C.validate_row(row)


def test_rows_from_before_intervals_are_reported_without_a_verdict(tmp_path):
    from clamu_helpers.reproduction.reproduce import write_report
    (tmp_path / "report").mkdir()
    legacy = [{"claim": "old claim", "paper": "+5%", "ours": "+1%", "reproduces": True}]
    (tmp_path / "report" / "02_clustering.json").write_text(json.dumps(legacy))
    text = write_report(tmp_path, "cpu", [{"notebook": "02_clustering", "ok": True, "seconds": 1.0, "error": ""}]).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| old claim"))
    assert line == "| old claim | +5% | +1% |"
    assert "Not re-run since claims were judged on intervals" in text


def test_notebooks_type_no_paper_number_and_no_verdict():
    """Verdicts come from claims.check, paper numbers from claims.CLAIMS: a notebook that sets
    'reproduces' itself, or calls report_rows with rows not made by the claims module, fails."""
    import nbformat
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert '"reproduces"' not in src, f"{nb_path.name} sets a verdict itself"
        assert '"paper":' not in src, f"{nb_path.name} types a paper number; declare it in clamu_helpers.reproduction.claims"


def test_report_summary_lists_claims_with_their_verdicts(tmp_path):
    from clamu_helpers import plots
    from clamu_helpers.reproduction.reproduce import write_report
    rows = [C.check("fig3-clamu", [0.05, 0.06, 0.07]), C.check("fig4-features", [0.01, -0.01, 0.0], why="too few tasks"),
            C.arithmetic("draft counting at T=500", "374.5×")]
    plots.report_rows("04_clamu", rows, "smoke", out=tmp_path)
    text = write_report(tmp_path, "smoke", [{"notebook": "04_clamu", "ok": True, "seconds": 1.0, "error": ""}]).read_text()
    summary = text.split("## 04_clamu")[0]
    assert "| reproduces |" in summary and "| **does not reproduce** |" in summary and "too few tasks" in summary
    assert "374.5×" not in summary                 # arithmetic is not a claim check
    assert "Cost model (arithmetic" in text and "374.5×" in text
    assert f"ClAMU > TALL, EMR ({C.PAPER_AT['fig3-clamu']})" in summary   # the paper's setting, model and T


def test_every_claim_says_where_the_paper_measured_it():
    assert set(C.PAPER_AT) == set(C.CLAIMS)
    assert all(C.PAPER_AT[k] and C.check(k, [0.1, 0.2])["paper_at"] == C.PAPER_AT[k] for k in C.CLAIMS)


def test_report_names_the_settings_of_its_rows_beside_the_papers_models():
    from clamu_helpers.reproduction.reproduce import settings_lines
    from clamu_helpers.settings import REGISTRY
    lines = settings_lines(["merging ... [images-uniform, T=200]", "clusters ... [fortunes-label-subsets, K=2]"])
    table = [line for line in lines if line.startswith("| `")]
    assert [line.split("`")[1] for line in table] == ["images-uniform", "fortunes-label-subsets"]
    fortunes = REGISTRY["fortunes-label-subsets"]
    assert fortunes.model in table[1] and REGISTRY[fortunes.paper_twin].model in table[1] and "GPT2" in table[1]
    assert settings_lines(["a claim on no registered setting [50 authors]"]) == []
    # every analog the notebooks run says what its M0 is, and so does its paper twin
    for e in REGISTRY.values():
        if e.paper_twin:
            assert e.model and REGISTRY[e.paper_twin].model, e.name


def test_what_this_run_shows_is_one_call_that_saves_the_rows_and_renders_them(tmp_path):
    """The notebooks' last cell: rows saved for REPORT.md (None rows dropped), and one Markdown
    line per row with our interval, the paper's number, the verdict and its reason."""
    from clamu_helpers.reproduction import plots
    rows = [C.check("fig3-clamu", [0.05, 0.06, 0.07]), None,
            C.check("fig4-features", [0.01, -0.01, 0.0], why="too few tasks"),
            C.measurement("Fig 3: ClAMU − its supermask control", [0.01, 0.02, 0.03])]
    md = plots.report("04_clamu", rows, "smoke", 3, out=tmp_path)
    text = md.data
    assert text.startswith("**What this run shows** (3 seeds; 95% t interval over seeds):")
    lines = [ln for ln in text.splitlines() if ln.startswith("- ")]
    assert len(lines) == 3
    assert lines[0].endswith(": **reproduces**") and "**does not reproduce** (" in lines[1]
    assert lines[1].endswith("; too few tasks)")                          # the reason from the numbers, then ours
    assert "supermask control" in lines[2] and "**" not in lines[2]     # a measurement has no verdict
    saved = json.loads((tmp_path / "report" / "04_clamu.json").read_text())["rows"]
    assert [r["claim"] for r in saved] == [r["claim"] for r in rows if r]
