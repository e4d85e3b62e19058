"""The unlearning-cost comparison: the draft's counting and measured costs."""
import pytest

from clamu_helpers.unlearning.audit import choose_forget_set

from clamu_helpers.core.errors import ClamuError
from clamu_helpers.methods import METHODS
from clamu_helpers.reproduction.unlearning_cost import (deletion_cost, draft_arithmetic, draft_table,
                                           measure_unlearning, parse_method, sequence_cost, sift_ratios)


def test_draft_arithmetic_reproduces_the_draft():
    df = draft_arithmetic(500, 250).set_index("method")
    assert df.loc["scratch", "task_trainings"] == 93_625 == sum(range(250, 500))
    assert df.loc["merge", "task_trainings"] == 250
    assert df.loc["scratch", "gradient_steps"] / df.loc["merge", "gradient_steps"] == 374.5
    assert df.loc["scratch", "sift_ratio_gradient"] == 374.5
    # TALL/EMR retrain τ_u and every remaining τ_t: Σ_{T=251}^{500} T; in parallel: 2 × merging
    assert df.loc["tall", "gradient_steps"] == sum(range(251, 501)) == 93_875
    assert df.loc["emr", "parallel_steps"] == 2 * df.loc["merge", "parallel_steps"] == 500
    assert df.loc["tall", "first_deletion_ratio"] == 500
    assert df.loc["sift", "sift_ratio_gradient"] == 1.0


def test_counting_rules_with_steps_and_clusters():
    assert deletion_cost("tall", 10, steps=7) == {"task_trainings": 10, "gradient_steps": 70, "parallel_steps": 14}
    # the draft's ClAMU (no validation search) with feature clusters: retrain u, 3 masks
    draft = {"alpha": 1.0, "mask_lr": 100.0, "cluster_by": "features"}
    assert deletion_cost("clamu", 10, steps=7, clusters=3, mask_steps=5, **draft) == {
        "task_trainings": 1, "gradient_steps": 7 + 3 * 5, "parallel_steps": 12}
    # task-vector clusters need every remaining τ_t to re-cluster: a second round of retraining
    assert deletion_cost("clamu", 10, steps=7, clusters=3, mask_steps=5, alpha=1.0, mask_lr=100.0) == {
        "task_trainings": 10, "gradient_steps": 70 + 3 * 5, "parallel_steps": 14 + 5}
    # with α and η chosen on validation: 3 α (scale_grid(9) = 1/9, 0.3, 1) + 3 η on the 3 clusters,
    # each round a successive halving over rungs of 1, 2 and 5 steps (3·1 + 1·1 + 1·3 = 7 steps)
    assert deletion_cost("clamu", 10, steps=7, clusters=3, mask_steps=5, cluster_by="features") == {
        "task_trainings": 1, "gradient_steps": 7 + (7 + 7) * 3, "parallel_steps": 7 + 2 * 5}
    assert deletion_cost("clamu", 10, steps=7, clusters=3, mask_steps=5, cluster_by="features", search="full") == {
        "task_trainings": 1, "gradient_steps": 7 + (3 + 3) * 3 * 5, "parallel_steps": 7 + 2 * 5}
    # 2 forgotten in one request: one round of retraining (2·E gradient, E parallel steps)
    assert deletion_cost("merge", 10, steps=7, n_forgotten=2) == {
        "task_trainings": 2, "gradient_steps": 14, "parallel_steps": 7}
    assert deletion_cost("scratch", 10, steps=7)["gradient_steps"] == 63
    assert deletion_cost("local", 10, steps=7)["gradient_steps"] == 0
    assert deletion_cost("tall", 1, steps=7)["parallel_steps"] == 7  # nothing left to relearn
    # 20 clusters, 250 deletions from 500 with 20 steps: Table 3's 10K parallel steps
    c = sequence_cost("clamu", 500, 250, steps=20, clusters=20, **draft)
    assert c["parallel_steps"] == 10_000 and c["gradient_steps"] == 250 * (20 + 20 * 20)
    assert sequence_cost("merge", 500, 250, steps=20)["gradient_steps"] == 5_000  # Table 2, Sent140
    t = draft_table([12, 200])
    assert list(t["total"].unique()) == [12, 200]
    assert t.set_index(["total", "method"]).loc[(200, "scratch"), "task_trainings"] == sum(range(100, 200))
    with pytest.raises(ClamuError):
        deletion_cost("nonsense", 10)
    with pytest.raises(ClamuError):
        sequence_cost("merge", 5, 6)


def test_parse_method_and_forget_sequence():
    assert parse_method("sift:scale=count,sign_seed=3") == ("sift:scale=count,sign_seed=3", "sift",
                                                            {"scale": "count", "sign_seed": 3})
    assert parse_method("sift:scale=0.5")[2] == {"scale": 0.5}
    assert parse_method("tall:vectors=keep, alpha=1/T")[2] == {"vectors": "keep", "alpha": "1/T"}   # text stays text
    with pytest.raises(ClamuError, match="method spec 'sift:scale' expects KEY=VALUE, got 'scale'"):
        parse_method("sift:scale")
    with pytest.raises(ClamuError, match="expects KEY=VALUE"):
        parse_method("sift:=1")
    ids = [f"t{i}" for i in range(20)]
    with pytest.raises(ClamuError):
        choose_forget_set(ids, 20, 0)


def test_measured_counts_match_steps_times_k(tiny):
    k, steps, T = 3, tiny.finetune_config.steps, len(tiny.task_ids)
    df = measure_unlearning(tiny, ["merge", "sift", "local", "sift:scale=count"], k=k, seed=0).set_index("method")
    for m in ("merge", "sift", "sift:scale=count"):
        assert df.loc[m, "unlearn_gradient_steps"] == steps * k == df.loc[m, "counted_unlearn_gradient_steps"]
        assert df.loc[m, "unlearn_parallel_steps"] == steps * k
        assert df.loc[m, "unlearn_finetunes"] == k
        assert df.loc[m, "fit_gradient_steps"] == steps * T
    assert df.loc["local", "unlearn_gradient_steps"] == 0
    # scratch, trained for real: one model on the remaining tasks after each deletion
    assert df.loc["scratch", "unlearn_gradient_steps"] == steps * sum(T - 1 - i for i in range(k))
    assert df["exact"].all()
    d = tiny.spec.numel
    assert df.loc["sift", "storage_bytes"] == 4 * d + (T - k) * ((d + 7) // 8)
    assert df.loc["local", "storage_bytes"] == 4 * d * (T - k)
    # a forgotten task is served as if never trained
    assert (df["acc_forgotten"] == df["acc_forgotten_never_trained"]).all()
    assert df.loc["sift", "acc_remaining"] > df.loc["merge", "acc_remaining"]
    r = sift_ratios(df.reset_index()).set_index("method")
    assert r.loc["merge", "ratio_unlearn_gradient_steps"] == 1.0
    assert r.loc["scratch", "ratio_unlearn_gradient_steps"] == sum(T - 1 - i for i in range(k)) / k
    with pytest.raises(ClamuError):
        measure_unlearning(tiny, ["no-such-method"], k=1)


@pytest.mark.parametrize("name", ["tall", "emr", "clamu", "cluster-merge"])
def test_other_methods_when_registered(tiny, name):
    if name not in METHODS:
        pytest.skip(f"method {name!r} is not registered (yet)")
    df = measure_unlearning(tiny, [name, "sift"], k=2, seed=1, scratch="count", share_vectors=True).set_index("method")
    assert bool(df.loc[name, "exact"])
    assert df.loc["sift", "unlearn_gradient_steps"] == 2 * tiny.finetune_config.steps


def test_claim_ratios_take_the_larger_baseline_per_seed_for_one_deletion():
    import pandas as pd
    from clamu_helpers.reproduction.unlearning_cost import CLAIM_BASELINES, claim_ratios
    rows = [{"method": m, "seed": sd, "tasks": 200, "k_rule": k, "ratio_seconds": v}
            for m, sd, k, v in [("tall", 1, "1", 50.0), ("emr", 1, "1", 70.0), ("tall", 0, "1", 30.0),
                                ("emr", 0, "1", 20.0), ("clamu", 0, "1", 999.0), ("tall", 0, "10%", 500.0)]]
    frame = pd.DataFrame(rows)
    assert CLAIM_BASELINES == ("tall", "emr")
    assert claim_ratios(frame, "ratio_seconds") == [30.0, 70.0]           # seed order; not ClAMU, not k = 10%
    assert claim_ratios(frame, "ratio_seconds", baselines=("clamu",)) == [999.0]
    two_T = pd.concat([frame, frame.assign(tasks=100)])
    with pytest.raises(ValueError, match="one T"):
        claim_ratios(two_T, "ratio_seconds")
