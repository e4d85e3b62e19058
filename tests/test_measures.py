"""The quantities claims are judged on (clamu_helpers.reproduction.measures), each checked against
the formula the notebooks wrote inline, on small frames whose answers are known."""
import pandas as pd
import pytest

from clamu_helpers.reproduction import measures as M
from clamu_helpers.reproduction.experiments import per_seed


def _fig3():
    rows = []
    for seed, (clamu, tall, emr, sm) in enumerate([(0.80, 0.70, 0.75, 0.78), (0.82, 0.79, 0.60, 0.70)]):
        for label, acc in (("ClAMU", clamu), ("TALL", tall), ("EMR", emr), ("ClAMU supermask (control)", sm)):
            rows.append({"seed": seed, "label": label, "accuracy": acc})
    return pd.DataFrame(rows)


def test_lead_is_the_label_minus_the_best_other_per_seed():
    f = _fig3()
    assert per_seed(f, M.lead("ClAMU", "TALL", "EMR")) == pytest.approx([0.05, 0.03])
    assert per_seed(f, M.lead("ClAMU", "ClAMU supermask (control)")) == pytest.approx([0.02, 0.12])
    assert per_seed(f, M.lead("ClAMU", "TALL", relative=True)) == pytest.approx([0.1 / 0.7, 0.03 / 0.79])
    with pytest.raises(ValueError, match="at least one"):
        M.lead("ClAMU")
    with pytest.raises(ValueError, match="several rows per label"):
        per_seed(pd.concat([f, f]), M.lead("ClAMU", "TALL"))


def test_recovery_and_growth_at_the_largest_task_count():
    rows = [{"seed": 0, "tasks": t, "model": m, "accuracy": a}
            for t, vals in ((2, (0.9, 0.95, 0.3)), (50, (0.5, 0.9, 0.3)))
            for m, a in zip(("merged", "local", "zero-shot"), vals)]
    f = pd.DataFrame(rows)
    share = M.recovery("merged", "zero-shot", "local", by="model", at_largest="tasks")
    assert per_seed(f, share) == pytest.approx([(0.5 - 0.3) / (0.9 - 0.3)])    # Fig 2 (ii): (m − z) / (l − z)
    assert per_seed(f, M.lead("merged", "local", by="model", at_largest="tasks")) == pytest.approx([-0.4])
    assert per_seed(f, M.growth("merged", by="model")) == pytest.approx([0.5 / 0.9])


def test_change_is_the_nearest_checkpoint_minus_none_unlearned_over_orders():
    rows = []
    for order, lift in ((0, 0.02), (1, 0.04)):
        for unlearned, remaining in ((0, 20), (10, 10), (19, 1)):
            rows.append({"seed": 0, "order": order, "unlearned": unlearned, "remaining": 20 if unlearned == 0 else remaining,
                         "accuracy": 0.7 + lift * (unlearned > 0) + 0.1 * (unlearned == 19)})
    f = pd.DataFrame(rows)
    assert per_seed(f, M.change("accuracy", 0.5)) == pytest.approx([0.03])    # mean of the orders' +0.02, +0.04
    assert per_seed(f, M.change("accuracy", 0.95)) == pytest.approx([0.13])


def test_ratio_of_a_column_between_two_rows():
    f = pd.DataFrame({"seed": [0, 0], "label": ["ClAMU", "SIFT-Masks"], "gradient_steps": [900, 30]})
    assert per_seed(f, M.ratio("ClAMU", "SIFT-Masks", "gradient_steps")) == [30.0]


def test_best_lead_takes_the_best_of_a_group_over_k():
    rows = [{"seed": 0, "label": "local", "clustering": "local", "accuracy": 0.80}]
    rows += [{"seed": 0, "label": f"{by} K={k}", "clustering": by, "accuracy": a}
             for by, k, a in (("features", 4, 0.70), ("features", 20, 0.83), ("random", 20, 0.95))]
    f = pd.DataFrame(rows)
    # the random clusters' 0.95 is another group: only the best feature clusters count
    assert per_seed(f, M.best_lead("clustering", "features", "local")) == pytest.approx([0.03])
    with pytest.raises(ValueError, match="no rows with clustering == 'task-vectors'"):
        per_seed(f, M.best_lead("clustering", "task-vectors", "local"))


def test_mean_lead_over_checkpoints_before_the_last():
    rows = []
    for order in (0, 1):
        for unlearned, gap in ((0, 0.10), (10, 0.20), (19, -0.50)):
            rows.append({"seed": 0, "order": order, "unlearned": unlearned, "label": "TALL", "accuracy": 0.5})
            rows.append({"seed": 0, "order": order, "unlearned": unlearned, "label": "ClAMU",
                         "accuracy": 0.5 + gap + 0.02 * order})
    f = pd.DataFrame(rows)
    assert per_seed(f, M.mean_lead("ClAMU", "TALL", "unlearned", before_last=True)) == pytest.approx([0.16])
    assert per_seed(f, M.mean_lead("ClAMU", "TALL", "unlearned")) == pytest.approx([(0.11 + 0.21 - 0.49) / 3])


def test_figure2_quantities_are_the_drafts_per_setting():
    """Figure 2's claim per setting and its quantity at the largest T, as notebook 01 wrote them
    inline: merged − local (CLIP (i)), (m − z) / (l − z) (label subsets, fortunes), m − z (Sent140)."""
    rows = [{"seed": 0, "tasks": t, "model": m, "accuracy": a}
            for t, vals in ((2, (0.9, 0.95, 0.3)), (50, (0.6, 0.9, 0.4)))
            for m, a in zip(("merged", "local", "zero-shot"), vals)]
    f = pd.DataFrame(rows)
    m, l, z = 0.6, 0.9, 0.4
    want = {"images-uniform": m - l, "images-label-subsets": (m - z) / (l - z), "reviews-by-movie": m - z,
            "fortunes-label-subsets": (m - z) / (l - z)}
    assert {name: key for name, (key, _) in M.FIGURE2.items()} == {
        "images-uniform": "fig2-uniform", "images-label-subsets": "fig2-label-subsets",
        "reviews-by-movie": "fig2-reviews", "fortunes-label-subsets": "fig2-fortunes"}
    for name, (_, q) in M.FIGURE2.items():
        assert per_seed(f, q) == [want[name]], name          # the same float operations: equal, not approx


def test_head_gain_is_label_name_minus_cls_averaged_over_clusterings():
    rows = [{"seed": 0, "label": lab, "clustering": by, "head": head, "accuracy": acc}
            for lab, by, head, acc in (("TALL", "random", "cls", 0.5), ("TALL", "random", "label-name", 0.7),
                                       ("TALL", "features", "cls", 0.6), ("TALL", "features", "label-name", 0.6),
                                       ("ClAMU", "random", "cls", 0.1), ("ClAMU", "random", "label-name", 0.9),
                                       ("ClAMU", "features", "cls", 0.2), ("ClAMU", "features", "label-name", 0.4))]
    f = pd.DataFrame(rows)
    assert per_seed(f, M.head_gain("TALL")) == pytest.approx([0.1])         # (0.2 + 0.0) / 2
    assert per_seed(f, M.head_gain("TALL", -1)) == pytest.approx([-0.1])
    assert per_seed(f, M.head_gain("ClAMU")) == pytest.approx([0.5])        # (0.8 + 0.2) / 2


def test_best_over_takes_the_largest_quantity_over_a_column():
    f = pd.DataFrame({"seed": [0] * 6 + [1] * 6, "K": [2, 2, 2, 4, 4, 4] * 2,
                      "label": ["ClAMU", "TALL", "EMR"] * 4,
                      "accuracy": [0.60, 0.50, 0.45, 0.70, 0.68, 0.40, 0.55, 0.56, 0.40, 0.62, 0.50, 0.52]})
    best = M.best_over("K", M.lead("ClAMU", "TALL", "EMR"))
    assert per_seed(f, best) == pytest.approx([0.10, 0.10])   # seed 0 at K=2, seed 1 at K=4
    assert per_seed(f[f.K == 4], best) == pytest.approx([0.02, 0.10])
    with pytest.raises(ValueError, match="no rows"):
        best(f.iloc[:0])
