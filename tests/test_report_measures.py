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
    from clamu_helpers.store import TaskVectorStore
    monkeypatch.setattr(ex, "_STORE", TaskVectorStore(tmp_path / "store"))


def test_forget_orders_differ_and_replay_matches_real_unlearning(blobs):
    real = ex.unlearning_orders(blobs, "merge", orders=3, schedule=[0, 5, 8], seed=0, replay="all")
    refit = ex.unlearning_orders(blobs, "merge", orders=3, schedule=[0, 5, 8], seed=0, replay="first")
    # exactness makes a refitted order score what the unlearned one scores, to the bit
    pd.testing.assert_series_equal(real["accuracy"], refit["accuracy"])
    assert (refit[refit.order > 0].replayed == "refitted").all() and refit[refit.order > 0].gradient_steps.isna().all()
    assert refit.exact.dropna().tolist() == [1.0]
    # orders are different permutations: the remaining tasks (hence local scores) differ somewhere
    from clamu_helpers.audit import choose_forget_set
    from clamu_helpers.determinism import stable_seed
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
    from clamu_helpers.system import UnlearningSystem
    timing.reset()
    UnlearningSystem(blobs, "tall").fit()
    snap = timing.snapshot()
    assert snap["finetuning"] > 0 and snap["mask optimisation"] > 0 and snap["evaluation"] > 0
    parts = sum(v for k, v in snap.items() if k not in ("wall",))
    assert parts == pytest.approx(snap["wall"], abs=0.3)
