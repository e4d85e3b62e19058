"""Hyperparameters chosen on validation data, the controls (supermask, random mask, sign-fixed
merge), TIES as a system method, cluster TALL on one scale, and the errors for bad settings."""
import pytest
import torch

from clamu_helpers.reproduction.experiments import served_columns
from clamu_helpers.core.merging import ties_merge
from clamu_helpers.methods.clamu import HALVING
from clamu_helpers.methods import METHODS, get_method
from clamu_helpers.localization.selection import choose, scale_grid
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.unlearning.system import UnlearningSystem


@pytest.fixture(scope="module")
def blobs():
    return SyntheticSetting(tasks=10)


def _fit(setting, method, **kw):
    return UnlearningSystem(setting, method, **kw).fit()


# -- the shared grid and the choice ------------------------------------------------------------
def test_scale_grid_starts_at_averaging_and_ends_at_the_plain_sum():
    assert scale_grid(200) == (0.005, 0.01, 0.03, 0.1, 0.3, 1.0)
    assert scale_grid(12) == (1 / 12, 0.1, 0.3, 1.0)
    assert scale_grid(100)[0] == 0.01 and scale_grid(100).count(0.01) == 1
    assert scale_grid(1) == (1.0,) and scale_grid(0) == ()


def test_choose_takes_the_best_then_the_first_and_skips_nan():
    assert choose([1, 2, 3], lambda c: {1: 0.5, 2: 0.9, 3: 0.9}[c]).value == 2
    assert choose(["a", "b"], lambda c: float("nan") if c == "a" else 0.1).value == "b"
    with pytest.raises(ValueError):
        choose([], lambda c: 0.0)


def test_task_arithmetic_alpha_is_the_argmax_of_validation_scores(blobs):
    s = _fit(blobs, "merge", alpha="val")
    grid = scale_grid(len(blobs.task_ids))
    val = {a: blobs.mean_score(blobs.theta0 + a * s.tau_bar, blobs.task_ids, "val") for a in grid}
    best = max(grid, key=lambda a: (val[a], -grid.index(a)))
    assert s.method.chosen == {"alpha": best}
    assert torch.equal(s.weights_for("s00"), blobs.theta0 + best * s.tau_bar)
    assert served_columns(s)["alpha"] == best
    # chosen on validation data, not on test: a test-only change does not move it
    test_best = max(grid, key=lambda a: blobs.mean_score(blobs.theta0 + a * s.tau_bar, blobs.task_ids, "test"))
    assert best in grid and (best == test_best or val[best] >= val[test_best])


def test_the_choice_is_refreshed_by_unlearning_and_stays_exact(blobs):
    for method, kw in [("merge", {"alpha": "val"}), ("sift", {"scale": "val"}), ("tall", {}),
                       ("ties", {}), ("clamu", {"mask_steps": 10})]:
        a = _fit(blobs, method, **kw)
        a.unlearn(["s03", "s07"])
        b = UnlearningSystem(blobs, method, **kw).fit([t for t in blobs.task_ids if t not in ("s03", "s07")])
        assert a.method.chosen == b.method.chosen, method
        assert a.served_digest() == b.served_digest(), method


# -- ClAMU's search and its supermask control ----------------------------------------------------
def test_clamu_equal_budget_defaults_and_search_record(blobs):
    s = _fit(blobs, "clamu", mask_steps=10)
    steps, batch = s.method.budget(blobs)
    assert (steps, batch) == (10, blobs.finetune_config.batch_size)
    d = get_method("clamu").budget(blobs)
    assert d == (blobs.finetune_config.steps, blobs.finetune_config.batch_size)  # E_mask = E, same batch
    served = s.method.served_params(s.context())
    assert served["alpha"] in scale_grid(10) and served["mask_lr"] in (10.0, 100.0, 1000.0, 10000.0)
    assert 0.0 < s.method.mask_density(s.context()) < 1.0
    # fit: the finetunes, the search (α round + η round over a sample of S = 8 of the 10 tasks,
    # each a successive halving over rungs of 2, 4 and 10 steps), then the 2 masks left
    T, E, S = 10, blobs.finetune_config.steps, 8
    assert HALVING.rungs(10) == [2, 4, 10]
    search = HALVING.steps(len(scale_grid(T)), 10) + HALVING.steps(3, 10)
    assert s.fit_costs.gradient_steps == T * E + search * S + (T - S) * 10
    assert s.fit_costs.parallel_steps == E + 3 * 10
    full = _fit(blobs, "clamu", mask_steps=10, search="full")     # the search as first written
    assert full.fit_costs.gradient_steps == T * E + (len(scale_grid(T)) + 3) * S * 10 + (T - S) * 10
    assert search < (len(scale_grid(T)) + 3) * 10


def _count_mask_steps(monkeypatch) -> list:
    """Mask steps trained from here on, one entry per ``MaskRun.advance``."""
    from clamu_helpers.localization.masks import MaskRun
    trained = []
    real = MaskRun.advance
    monkeypatch.setattr(MaskRun, "advance", lambda self, n: trained.append(min(n, self.config.steps - self.done))
                        or real(self, n))
    return trained


@pytest.mark.parametrize("params, expect", [({}, None), ({"clusters": 3}, None), ({"search": "full"}, None),
                                            ({"alpha": 1.0, "mask_lr": 100.0}, (10, 10)),
                                            ({"clusters": 3, "search_on": "tasks"}, None),
                                            ({"halving_reduction": 4, "halving_min_fraction": 1 / 16}, None)])
def test_clamu_mask_fits_counts_the_mask_steps_a_fit_trains(blobs, monkeypatch, params, expect):
    """``Clamu.mask_fits`` (used by benchmarks/time_floor.py to split mask time into search and
    served masks) equals the mask steps a fit trains, in full-budget masks."""
    from collections import OrderedDict

    import clamu_helpers.methods.clamu as clamu
    from clamu_helpers.localization.masks import MaskRun
    monkeypatch.setattr(clamu, "_SHARED", OrderedDict())   # a search on tasks is made, not found
    trained = []
    real = MaskRun.advance
    monkeypatch.setattr(MaskRun, "advance", lambda self, n: trained.append(min(n, self.config.steps - self.done))
                        or real(self, n))
    s = _fit(blobs, "clamu", mask_steps=9, **params)
    fits = s.method.mask_fits(len(s.task_ids))
    assert fits == (sum(trained) / 9, s.method.n_clusters(len(s.task_ids)))
    assert s.fit_costs.gradient_steps == len(s.task_ids) * blobs.finetune_config.steps + sum(trained)
    if expect is not None:
        assert fits == expect                       # nothing chosen: every served mask once, no search


def test_search_on_tasks_is_one_search_for_every_k_and_the_control(blobs, monkeypatch):
    """``search_on="tasks"``: the α/η search runs on one mask per task over τ̄, so fits with other
    K, and the supermask control, reuse it instead of searching again, and are charged its steps
    as if they ran it (fit compute stays comparable); a cleared cache gives the same choice."""
    from collections import OrderedDict

    import clamu_helpers.methods.clamu as clamu
    monkeypatch.setattr(clamu, "_SHARED", OrderedDict())
    trained = _count_mask_steps(monkeypatch)
    T, E = len(blobs.task_ids), blobs.finetune_config.steps
    a = _fit(blobs, "clamu", mask_steps=9, clusters=2, search_on="tasks")
    first = sum(trained)
    trained.clear()
    b = _fit(blobs, "clamu", mask_steps=9, clusters=5, search_on="tasks")
    c = _fit(blobs, "clamu-supermask", mask_steps=9, clusters=2, search_on="tasks")
    assert a.method.chosen == b.method.chosen == c.method.chosen and set(a.method.chosen) == {"alpha", "mask_lr"}
    assert sum(trained) == (5 + 2) * 9                    # b and c trained only the masks they serve
    assert first == a.method.mask_fits(T)[0] * 9          # a trained the search and its 2 masks
    for s in (a, b, c):                                   # each charged the search as if it ran it
        assert s.fit_costs.gradient_steps == T * E + s.method.mask_fits(T)[0] * 9
    search_steps = first - 2 * 9
    assert b.fit_costs.gradient_steps == T * E + search_steps + 5 * 9
    # the cache is a pure cache: searched again from nothing, the same choice and served bits
    monkeypatch.setattr(clamu, "_SHARED", OrderedDict())
    again = _fit(blobs, "clamu", mask_steps=9, clusters=5, search_on="tasks")
    assert again.method.chosen == b.method.chosen and again.served_digest() == b.served_digest()


@pytest.mark.parametrize("clear_between", [False, True])
def test_search_on_tasks_is_searched_again_after_unlearning_and_stays_exact(blobs, monkeypatch, clear_between):
    """A refresh after unlearning has another task set, so it searches again: the unlearned
    system equals a fresh fit on the remaining tasks, whether or not the cache saw them first."""
    from collections import OrderedDict

    import clamu_helpers.methods.clamu as clamu
    monkeypatch.setattr(clamu, "_SHARED", OrderedDict())
    kw = dict(mask_steps=6, clusters=3, search_on="tasks")
    a = _fit(blobs, "clamu", **kw)
    a.unlearn(["s02", "s05"])
    if clear_between:
        monkeypatch.setattr(clamu, "_SHARED", OrderedDict())
    b = UnlearningSystem(blobs, "clamu", **kw).fit([t for t in blobs.task_ids if t not in ("s02", "s05")])
    assert a.method.chosen == b.method.chosen and a.served_digest() == b.served_digest()


def test_a_more_aggressive_halving_schedule_trains_fewer_search_steps(blobs):
    default = _fit(blobs, "clamu", mask_steps=16)
    aggressive = _fit(blobs, "clamu", mask_steps=16, halving_reduction=4, halving_min_fraction=1 / 16)
    assert aggressive.method.halving().rungs(16) == [1, 4, 16] and default.method.halving().rungs(16) == [2, 6, 16]
    assert aggressive.fit_costs.gradient_steps < default.fit_costs.gradient_steps
    for bad in (dict(halving_reduction=1), dict(halving_min_fraction=0), dict(halving_min_fraction=1.5),
                dict(search_on="everything")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_method("clamu", **bad)


def test_successive_halving_keeps_the_best_third_and_resumes_them():
    from clamu_helpers.localization.selection import Halving, search, search_steps
    h = Halving(3, 1 / 9)
    assert h.rungs(20) == [3, 7, 20] and h.rungs(1) == [1] and Halving(2, 1 / 4).rungs(40) == [10, 20, 40]
    quality = {"a": 0.2, "b": 0.9, "c": 0.5, "d": 0.9, "e": float("nan"), "f": 0.1}
    seen = []

    def evaluate(c, steps):
        seen.append((c, steps))
        return quality[c] * steps           # the better candidate leads at every rung

    best = search(list(quality), evaluate, 20, h)
    assert best.value == "b"                # ties go to the earlier candidate, NaN is never kept
    assert [c for c, b in seen if b == 3] == list(quality)
    assert sorted(c for c, b in seen if b == 7) == ["b", "d"] and [c for c, b in seen if b == 20] == ["b"]
    assert h.steps(6, 20) == 6 * 3 + 2 * 4 + 1 * 13 == search_steps(6, 20, h)
    assert search(list(quality), evaluate, 20).value == "b" and search_steps(6, 20) == 120
    for bad in (dict(reduction=1), dict(min_fraction=0), dict(reduction=2.5)):
        with pytest.raises(ValueError, match="halving"):
            Halving(**bad)


def test_clamu_refuses_an_unknown_search():
    with pytest.raises(ValueError, match="search must be one of"):
        get_method("clamu", search="grid")


def test_a_clamu_state_saved_before_halving_loads_as_the_full_search(blobs, tmp_path):
    """A saved state without ``search`` (written before it existed) rebuilds with the full
    search and keeps its digest: a parameter at its legacy value is not hashed."""
    import hashlib
    import json
    s = _fit(blobs, "clamu", mask_steps=4, search="full")
    s.save(tmp_path / "sys")
    state = next((tmp_path / "sys").glob("state-*/state.json"))
    meta = json.loads(state.read_text())
    assert meta["method"]["params"].pop("search") == "full"
    for later in ("halving_reduction", "halving_min_fraction", "search_on"):   # added after halving
        meta["method"]["params"].pop(later)
    state.write_bytes(json.dumps(meta).encode())
    manifest = state.with_name("manifest.json")          # as the older version wrote it
    listed = json.loads(manifest.read_text())
    listed["files"]["state.json"] = {"bytes": state.stat().st_size, "sha256": hashlib.sha256(state.read_bytes()).hexdigest()}
    manifest.write_text(json.dumps(listed))
    pointer = tmp_path / "sys" / "current.json"
    ptr = json.loads(pointer.read_text())
    ptr["manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    pointer.write_text(json.dumps(ptr))
    back = UnlearningSystem.load(tmp_path / "sys", blobs)
    assert back.method.params["search"] == "full" and back.served_digest() == s.served_digest()
    assert (back.method.p.halving_reduction, back.method.p.search_on) == (3, "clusters")


def test_supermask_control_optimizes_over_random_signs_of_tau_bar(blobs):
    s = _fit(blobs, "clamu-supermask", mask_steps=10)
    v = s.method.target(s.context())
    assert torch.equal(v.abs(), s.tau_bar.abs())
    agree = float(((v > 0) == (s.tau_bar > 0))[s.tau_bar != 0].float().mean())
    assert 0.35 < agree < 0.65                        # random signs: about half agree with τ̄
    assert torch.equal(v, _fit(blobs, "clamu-supermask", mask_steps=10).method.target(s.context()))  # seeded
    other = UnlearningSystem(blobs, "clamu-supermask", sign_seed=5, mask_steps=10)
    other.ledger = s.ledger
    assert not torch.equal(other.method.target(other.context()), v)
    c = s.method.assignment["s00"]
    m = s.method.mask(s.context(), c)
    assert torch.equal(s.weights_for("s00"), blobs.theta0 + s.method.alpha(s.context()) * torch.where(m, v, torch.zeros(())))


# -- SIFT-Masks' controls ------------------------------------------------------------------------
def test_random_mask_control_keeps_each_masks_density_not_its_choice(blobs):
    sift = _fit(blobs, "sift")
    ctrl = _fit(blobs, "sift-random-mask")
    assert sift.ledger.digest() == ctrl.ledger.digest()       # the same sign-fixed τ̄
    overlaps = []
    for t in blobs.task_ids:
        m, r = sift.method.mask(t), ctrl.method.mask(t)
        assert int(m.sum()) == int(r.sum())
        overlaps.append(float((m & r).sum()) / max(1, int(m.sum())))
    dens = sift.method.mask_density(sift.context())
    assert ctrl.method.mask_density(ctrl.context()) == pytest.approx(dens)
    assert abs(sum(overlaps) / len(overlaps) - dens) < 0.1   # chance overlap, not m_t itself
    assert torch.equal(ctrl.weights_for("s00"), blobs.theta0 + torch.where(
        ctrl.method.mask("s00"), (1 / 10) * ctrl.tau_bar, torch.zeros(())))


def test_sign_fixed_merge_serves_every_task_tau_bar_over_t(blobs):
    s = _fit(blobs, "sift-merge")
    assert s.ledger.digest() == _fit(blobs, "sift").ledger.digest()
    for t in ("s00", "s04"):
        assert torch.equal(s.weights_for(t), blobs.theta0 + (1 / 10) * s.tau_bar)
    assert s.method.mask_density(s.context()) is None and s.storage_bytes() == 4 * blobs.spec.numel
    assert s.method.masks == {}


# -- TIES -------------------------------------------------------------------------------------------
def test_ties_system_method_serves_the_merging_formula(blobs):
    s = _fit(blobs, "ties", k=0.2, lam=1.5)
    vecs = s.finetune(blobs.task_ids)
    expect = ties_merge([vecs[t].values for t in sorted(vecs)], 0.2)
    assert torch.equal(s.weights_for("s01"), blobs.theta0 + 1.5 * expect)
    tuned = _fit(blobs, "ties")
    k, lam = tuned.method.chosen["k"], tuned.method.chosen["lam"]
    assert k in (0.1, 0.2, 0.3) and lam in (0.1, 0.3, 0.5, 1.0, 1.5, 2.0)


def test_ties_merge_elects_zero_signs_by_majority():
    a = torch.tensor([1.0, -1.0, 2.0])
    b = torch.tensor([-1.0, 1.0, 3.0])
    # sums [0, 0, 5]: zero signs take the majority sign of the elected vector (+1)
    assert ties_merge([a, b], k=1.0).tolist() == [1.0, 1.0, 2.5]


# -- cluster TALL on one scale ---------------------------------------------------------------------
def test_cluster_tall_masks_are_neither_empty_nor_full():
    """Per-task TALL masks keep 5–95% of the coordinates here; so must cluster masks, whose
    local vector (the cluster's sum) is compared with the rest of τ̄ on τ̄'s own scale. (The
    cluster mean against τ̄ kept almost nothing.)"""
    st = SyntheticSetting(tasks=12, seed=1)
    per_task = _fit(st, "tall", alpha=1.0)
    assert 0.05 < per_task.method.mask_density(per_task.context()) < 0.95
    for by in ("random", "task-vectors"):
        clustered = _fit(st, "tall", alpha=1.0, clusters=3, cluster_by=by)
        assert 0.05 < clustered.method.mask_density(clustered.context()) < 0.95, by
    mean_scale = _fit(st, "tall", alpha=1.0, clusters=3, cluster_by="random", cluster_vector="mean")
    assert mean_scale.method.mask_density(mean_scale.context()) < clustered.method.mask_density(clustered.context())


# -- registry and bad input --------------------------------------------------------------------------
def test_every_method_declares_itself():
    for name, cls in METHODS.items():
        assert cls.name == name and cls.reference, name
        assert cls.control_of is None or cls.control_of in METHODS
        get_method(name, **cls.test_params)  # the fast test parameters are valid
    assert {m for m, c in METHODS.items() if c.control_of} == {"clamu-supermask", "sift-random-mask", "sift-merge"}


@pytest.mark.parametrize("name,kw,match", [
    ("clamu", {"update": "adam"}, "update"),
    ("clamu", {"mask_steps": 0}, "mask_steps"),
    ("clamu", {"mask_steps": -5}, "mask_steps"),
    ("clamu", {"mask_batch_size": 0}, "mask_batch_size"),
    ("clamu", {"mask_lr": 0.0}, "mask_lr"),
    ("clamu", {"alphas": [0.1, -1.0]}, "alphas"),
    ("clamu", {"mask_lrs": []}, "mask_lrs"),
    ("clamu-supermask", {"select_clusters": 0}, "select_clusters"),
    ("tall", {"alpha": -0.5}, "alpha"),
    ("tall", {"lambdas": [0.2, 0.0]}, "lambdas"),
    ("merge", {"alpha": "half"}, "alpha"),
    ("emr", {"rescaler": "layer"}, "rescaler"),
    ("ties", {"k": 1.5}, "k"),
    ("ties", {"lams": [0.0]}, "lams"),
    ("ties", {"ks": [0.2, 2.0]}, "ks"),
    ("sift", {"scale": -1.0}, "scale"),
    ("sift-merge", {"scale": "count"}, "scale"),
    ("cluster-merge", {"alpha": "val"}, "val"),
])
def test_bad_parameters_name_the_parameter(name, kw, match):
    with pytest.raises(Exception, match=match):
        get_method(name, **kw)


# -- the comparison rows and the control read-out ------------------------------------------------------
def test_comparison_rows_and_control_gaps():
    import pandas as pd
    from clamu_helpers import experiments as ex
    assert set(ex.methods("ClAMU", "TALL")) == {"ClAMU", "TALL"}
    with pytest.raises(KeyError, match="unknown comparison rows"):
        ex.methods("ClAMU++")
    for label, (name, params) in ex.COMPARISON.items():
        get_method(name, **params)   # every row is a valid method
    for method, control, _ in ex.CONTROLS:
        assert METHODS[ex.COMPARISON[control][0]].control_of == ex.COMPARISON[method][0]
    frame = pd.DataFrame({"label": ["ClAMU", "ClAMU supermask (control)", "SIFT-Masks",
                                    "SIFT random mask (control)", "SIFT sign-fixed merge (control)"],
                          "accuracy": [0.92, 0.915, 0.88, 0.74, 0.95]})
    g = ex.control_gaps(frame).set_index("control")
    assert g.loc["ClAMU supermask (control)", "gap"] == pytest.approx(0.005)
    assert g.loc["ClAMU supermask (control)", "reading"].startswith("about equal")
    assert g.loc["SIFT random mask (control)", "reading"].startswith("the method beats")
    assert g.loc["SIFT sign-fixed merge (control)", "reading"].startswith("the control beats")
    assert ex.control_gaps(frame[frame.label != "ClAMU"]).method.tolist() == ["SIFT-Masks", "SIFT-Masks"]
