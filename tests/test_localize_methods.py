"""TALL, EMR, ClAMU and cluster-merge inside the unlearning system: the exactness audit,
refreshed state equal to a from-scratch computation, accuracy over plain merging, costs."""
import pytest
import torch

from clamu_helpers.localization.clustering import members, task_vector_clusters
from clamu_helpers.runtime.costs import Costs
from clamu_helpers.training.finetune import finetune
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.localization.emr_merging import emr
from clamu_helpers.localization.masks import MaskConfig, choose_lambda, masked_weights, optimize_mask, storage_bytes
from clamu_helpers.runtime.determinism import generator
from clamu_helpers.methods import METHODS, get_method
from clamu_helpers.methods.clamu import ETA_GRIDS, HALVING
from clamu_helpers.localization.selection import scale_grid
from clamu_helpers.core.packing import packed_bytes, unpack
from clamu_helpers.unlearning.system import UnlearningSystem

FAST = {"mask_steps": 40}
CONFIGS = [
    ("tall", {}),
    ("tall", {"clusters": 3}),
    ("tall", {"vectors": "keep"}),
    ("emr", {}),
    ("emr", {"clusters": 3, "cluster_by": "features"}),
    ("clamu", FAST),
    ("clamu", {**FAST, "clusters": 3}),
    ("cluster-merge", {"clusters": 3}),
    ("cluster-merge", {"clusters": 3, "cluster_by": "random"}),
    ("cluster-merge", {"clusters": 3, "cluster_by": "features"}),
    ("cluster-merge", {"clusters": 3, "cluster_by": "features", "vectors": "keep"}),
]
FORGET = "s03"


def _fit(setting, method, kw, ids=None):
    return UnlearningSystem(setting, method, **kw).fit(ids)


@pytest.fixture(scope="module")
def audited(tiny):
    """For each config: (system after unlearning FORGET, system fitted without it)."""
    rest = [t for t in tiny.task_ids if t != FORGET]
    out = {}
    for method, kw in CONFIGS:
        a = _fit(tiny, method, kw)
        a.unlearn([FORGET])
        out[(method, tuple(sorted(kw.items())))] = (a, _fit(tiny, method, kw, rest))
    return out


@pytest.mark.parametrize("method,kw", CONFIGS, ids=[f"{m}-{sorted(k.items())}" for m, k in CONFIGS])
def test_unlearning_is_exact(audited, method, kw):
    a, b = audited[(method, tuple(sorted(kw.items())))]
    assert a.served_digest() == b.served_digest()
    ta, ma = a.method.state(a.context())
    tb, mb = b.method.state(b.context())
    assert ma == mb and ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    for tid in a.setting.task_ids:
        assert torch.equal(a.weights_for(tid), b.weights_for(tid))
    # the forgotten task is served the fallback M0 + τ̄/T
    assert FORGET not in a.method.assignment
    assert torch.equal(a.weights_for(FORGET), a.setting.theta0 + (1 / 7) * a.tau_bar)


def _vectors(tiny, ids):
    return {t: finetune(tiny, tiny.task(t), seed=0) for t in ids}


def test_refreshed_tall_and_emr_equal_the_formulas_from_scratch(tiny, audited):
    rest = [t for t in tiny.task_ids if t != FORGET]
    vecs = _vectors(tiny, rest)
    tau_bar = MergeLedger.from_vectors(vecs.values()).tau_bar()
    a = audited[("tall", ())][0]
    assert torch.equal(a.tau_bar, tau_bar)
    # α chosen on validation from the shared grid: the mean over tasks of the best-λ val score
    by_alpha = {}
    for al in scale_grid(len(rest)):
        by_alpha[al] = {}
        for t in rest:
            x, y = tiny.task(t).val
            by_alpha[al][t] = choose_lambda(vecs[t].values, tau_bar, lambda m: tiny.score(
                masked_weights(tiny.theta0, m, tau_bar, al), x, y))
    mean_val = {al: sum(ch.scores[ch.lam] for ch in chs.values()) / len(chs) for al, chs in by_alpha.items()}
    best = max(mean_val, key=lambda al: (mean_val[al], -list(mean_val).index(al)))
    assert a.method.chosen == {"alpha": best} and a.method.alpha(a.context()) == best
    for t in rest:
        ch = by_alpha[best][t]
        c = a.method.assignment[t]
        assert a.method.lambdas[c] == ch.lam
        assert torch.equal(a.method.mask(a.context(), c), ch.mask)
        assert torch.equal(a.weights_for(t), masked_weights(tiny.theta0, ch.mask, tau_bar, best))
    e = audited[("emr", ())][0]
    ref = emr({t: vecs[t].values for t in rest}, elect=tau_bar, segments=tiny.spec.sizes)
    assert torch.equal(e.method.result.tau_uni, ref.tau_uni)
    for t in rest:
        c = e.method.assignment[t]
        assert torch.equal(e.method.result.mask(c), ref.mask(t))
        assert e.method.result.rescalers[c] == ref.rescalers[t]
        assert torch.equal(e.weights_for(t), ref.weights(tiny.theta0, t))


def test_refreshed_clamu_masks_equal_masks_optimized_from_scratch(tiny, audited):
    rest = [t for t in tiny.task_ids if t != FORGET]
    a = audited[("clamu", tuple(sorted({**FAST, "clusters": 3}.items())))][0]
    vecs = _vectors(tiny, rest)
    expect = task_vector_clusters({t: v.values for t, v in vecs.items()}, 3, seed=0)
    assert a.method.assignment == expect
    alpha, eta = a.method.chosen["alpha"], a.method.chosen["mask_lr"]
    assert alpha in scale_grid(len(rest)) and eta in ETA_GRIDS["draft"]
    for c, ids in members(expect).items():
        x = torch.cat([tiny.task(t).train[0] for t in ids])
        y = torch.cat([tiny.task(t).train[1] for t in ids])
        cfg = MaskConfig(steps=40, lr=eta, batch_size=tiny.finetune_config.batch_size, alpha=alpha)
        m, _ = optimize_mask(tiny, a.tau_bar, (x, y), cfg, generator(0, "clamu-mask", *ids))
        assert torch.equal(a.method.mask(a.context(), c), m)
        assert 0 < int(m.sum()) < m.numel()


def test_cluster_merge_serves_scaled_exact_cluster_sums(tiny, audited):
    a = audited[("cluster-merge", (("cluster_by", "features"), ("clusters", 3)))][0]
    for c, ids in a.method.groups.items():
        s = MergeLedger.from_vectors(_vectors(tiny, ids).values()).tau_bar()
        for t in ids:
            assert torch.equal(a.weights_for(t), tiny.theta0 + (1.0 / len(ids)) * s)


@pytest.fixture(scope="module")
def accuracies(tiny, audited):
    """Test accuracy on the 7 tasks of the from-scratch systems (merge fitted the same way)."""
    rest = [t for t in tiny.task_ids if t != FORGET]
    out = {"merge": float(_fit(tiny, "merge", {}, rest).evaluate("test", rest)["accuracy"].mean())}
    for method, key in [("tall", ()), ("emr", ()), ("clamu", (("mask_steps", 40),))]:
        b = audited[(method, key)][1]
        out[method] = float(b.evaluate("test", rest)["accuracy"].mean())
    return out


@pytest.mark.parametrize("method", ["tall", "emr", "clamu"])
def test_localization_beats_plain_merging(accuracies, method):
    """The paper's claim (Figure 3): task-level masks recover accuracy that merging loses."""
    assert accuracies["merge"] < 0.9
    assert accuracies[method] >= accuracies["merge"] + 0.05, accuracies


def test_cost_accounting_of_unlearning(tiny, audited):
    E, T = tiny.finetune_config.steps, len(tiny.task_ids)
    tall = audited[("tall", ())][0].unlearn_costs           # retrain u, then the T−1 others
    assert (tall.finetunes, tall.gradient_steps, tall.parallel_steps) == (T, T * E, 2 * E)
    keep = audited[("tall", (("vectors", "keep"),))][0]      # kept vectors: only u is retrained
    assert (keep.unlearn_costs.finetunes, keep.unlearn_costs.gradient_steps) == (1, E)
    d = tiny.spec.numel
    assert keep.storage_bytes() == storage_bytes(d, 1, T - 1, T - 1) + 4 * d * (T - 1)
    # K = T − 1 = 7 masks, all in the search sample (S = min(8, 7)): an α round over
    # scale_grid(7) = (1/7, 0.3, 1) and an η round over the 3 other η, each a successive halving
    # over rungs of 5, 14 and 40 steps, then nothing left to fit
    cl = audited[("clamu", (("mask_steps", 40),))][0].unlearn_costs
    n_alpha, n_eta = len(scale_grid(T - 1)), len(ETA_GRIDS["draft"]) - 1
    search = HALVING.steps(n_alpha, 40) + HALVING.steps(n_eta, 40)
    assert (cl.finetunes, cl.gradient_steps, cl.parallel_steps) == (1, E + search * (T - 1), E + 2 * 40)
    # 3 task-vector clusters: retrain the others to re-cluster; the search over all 3 clusters
    clk = audited[("clamu", tuple(sorted({**FAST, "clusters": 3}.items())))][0].unlearn_costs
    assert (clk.finetunes, clk.gradient_steps, clk.parallel_steps) == (
        T, T * E + search * 3, 2 * E + 2 * 40)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_measured_costs_equal_each_methods_counting_rule(tiny, name):
    """What the system executes (one request of 2 tasks, then one of 1) equals what the
    method's declared rule counts, for every registered method (cluster-merge: a lower bound)."""
    cls = METHODS[name]
    params = dict(cls.test_params)
    E = tiny.finetune_config.steps
    s = UnlearningSystem(tiny, name, **params).fit()
    counted = Costs()
    for req in (["s01", "s05"], ["s02"]):
        n_before = len(s.ledger)
        s.unlearn(req)
        counted.add(**s.method.unlearning_cost(n_before, len(req), E).counts())
    measured = s.unlearn_costs.counts()
    if cls.cost_rule_exact:
        assert measured == counted.counts()
    else:
        assert all(measured[k] >= v for k, v in counted.counts().items())
    if s.method.retrains:   # a batch of n forgotten tasks is one round: E parallel steps, not n·E
        assert measured["parallel_steps"] >= 2 * E and measured["finetunes"] >= 3


def test_storage_counts(tiny, audited):
    d, T = tiny.spec.numel, len(tiny.task_ids) - 1
    assert audited[("tall", ())][0].storage_bytes() == 4 * d + T * packed_bytes(d) + 4 * T
    assert audited[("emr", ())][0].storage_bytes() == 8 * d + T * packed_bytes(d) + 4 * T
    assert audited[("cluster-merge", (("cluster_by", "random"), ("clusters", 3)))][0].storage_bytes() == 3 * 4 * d


@pytest.mark.parametrize("method,kw", [("tall", {"clusters": 3}), ("emr", {}), ("clamu", FAST),
                                       ("cluster-merge", {"clusters": 3, "cluster_by": "random"})])
def test_state_round_trip(audited, method, kw):
    a = audited[(method, tuple(sorted(kw.items())))][0]
    tensors, meta = a.method.state(a.context())
    packed = tensors.get("masks")
    if packed is not None:   # masks are stored bit-packed
        assert packed.dtype == torch.uint8 and packed.shape[1] == packed_bytes(a.setting.spec.numel)
        assert torch.equal(unpack(packed[0], a.setting.spec.numel), a.method.mask(a.context(), 0)
                           if hasattr(a.method, "mask") else a.method.result.mask(0))
    b = UnlearningSystem(a.setting, method, **kw)
    b.ledger = a.ledger
    b.method.load_state(b.context(), {k: v.clone() for k, v in tensors.items()}, meta)
    assert b.served_digest() == a.served_digest()
    for tid in a.setting.task_ids:
        assert torch.equal(a.weights_for(tid), b.weights_for(tid))


def test_bad_parameters_raise():
    for name, kw in [("tall", {"clusters": 0}), ("emr", {"cluster_by": "labels"}), ("clamu", {"vectors": "disk"}),
                     ("cluster-merge", {"alpha": "half"}), ("tall", {"lambdas": []}),
                     ("clamu", {"mask_lr": 0.0}), ("emr", {"negative": "abs"})]:
        with pytest.raises(ValueError):
            get_method(name, **kw)
    assert get_method("clamu").keeps_vectors is False
    assert get_method("clamu", vectors="keep").keeps_vectors is False          # per-task masks never need τ_t
    assert get_method("clamu", vectors="keep", clusters=4).keeps_vectors is True


def test_cluster_merge_sequential_unlearning_with_reclustering_stays_exact(tiny):
    """Feature clusters move when tasks leave: reused, shrunk (subtract) and rebuilt cluster
    ledgers must all equal a from-scratch fit."""
    kw = {"clusters": 3, "cluster_by": "features"}
    a = _fit(tiny, "cluster-merge", kw)
    a.unlearn(["s03"])
    a.unlearn(["s00", "s01"])
    b = _fit(tiny, "cluster-merge", kw, [t for t in tiny.task_ids if t not in ("s00", "s01", "s03")])
    assert a.served_digest() == b.served_digest()


@pytest.mark.parametrize("method,kw", [("tall", {}), ("emr", {}), ("clamu", {"mask_steps": 5}),
                                       ("cluster-merge", {"clusters": 2})])
def test_unlearning_every_task_leaves_m0(tiny, method, kw):
    a = _fit(tiny, method, kw, ["s00", "s01"])
    a.unlearn(["s00", "s01"])
    assert len(a.ledger) == 0 and a.method.assignment == {}
    assert torch.equal(a.weights_for("s00"), tiny.theta0)
    assert a.served_digest() == UnlearningSystem(tiny, method, **kw).served_digest()


def test_cluster_vector_is_the_sum_for_tall_and_the_merged_model_for_emr(tiny):
    """TALL compares a cluster's share of τ̄ (its sum τ_k) with the rest of τ̄, on one scale;
    EMR merges the clusters' merged models τ_k/|k| (draft Sec. 4.3)."""
    from clamu_helpers import MergeLedger, UnlearningSystem
    from clamu_helpers.methods import get_method
    system = UnlearningSystem(tiny, "merge").fit()
    vectors = system.finetune(tiny.task_ids[:3])
    ids = list(vectors)
    total = MergeLedger.from_vectors(vectors.values()).tau_bar()
    tall = get_method("tall", clusters=2).group_vector(system.context(), ids, vectors)
    emr_mean = get_method("emr", clusters=2).group_vector(system.context(), ids, vectors)
    raw = get_method("emr", clusters=2, cluster_vector="sum").group_vector(system.context(), ids, vectors)
    assert torch.equal(tall, total) and torch.equal(raw, total) and torch.equal(emr_mean, total / 3)
    with pytest.raises(ValueError, match="cluster_vector"):
        get_method("tall", cluster_vector="median")
