import pytest
import torch

from clamu_helpers import (DuplicateTaskError, ExactnessError, UnknownTaskError, UnlearningSystem)
from clamu_helpers.methods import METHODS


@pytest.mark.parametrize("method", ["merge", "local"])
def test_unlearning_equals_from_scratch(tiny, method):
    ids = tiny.task_ids
    a = UnlearningSystem(tiny, method).fit()
    a.unlearn([ids[2]])
    a.unlearn([ids[5], ids[0]])
    b = UnlearningSystem(tiny, method).fit([i for i in ids if i not in {ids[0], ids[2], ids[5]}])
    assert a.served_digest() == b.served_digest()
    assert a.ledger.digest() == b.ledger.digest()
    for tid in ids:
        assert torch.equal(a.weights_for(tid), b.weights_for(tid))


def test_merge_serves_the_average_and_local_the_task_vector(tiny):
    m = UnlearningSystem(tiny, "merge").fit()
    vecs = m.finetune(tiny.task_ids)
    mean = torch.stack([v.values for v in vecs.values()]).double().sum(0) / len(vecs)
    assert torch.allclose(m.weights_for("s00").double(), tiny.theta0.double() + mean, atol=1e-6)
    loc = UnlearningSystem(tiny, "local").fit()
    assert torch.equal(loc.weights_for("s03"), tiny.theta0 + vecs["s03"].values)
    assert loc.storage_bytes() == len(tiny.tasks) * m.storage_bytes()


def test_local_beats_merge_on_label_subsets(tiny):
    merged = UnlearningSystem(tiny, "merge").fit().evaluate()["accuracy"].mean()
    local = UnlearningSystem(tiny, "local").fit().evaluate()["accuracy"].mean()
    assert local > merged + 0.05


def test_cost_report_counts_steps(tiny):
    s = UnlearningSystem(tiny, "merge").fit()
    steps = tiny.finetune_config.steps
    assert s.fit_costs.gradient_steps == len(tiny.tasks) * steps and s.fit_costs.parallel_steps == steps
    s.unlearn(["s01", "s02"])
    assert s.unlearn_costs.gradient_steps == 2 * steps and s.unlearn_costs.finetunes == 2
    r = s.report()
    assert r["tasks"] == len(tiny.tasks) - 2 and r["unlearned"] == ["s01", "s02"]


def test_bad_requests_change_nothing(tiny):
    s = UnlearningSystem(tiny, "merge").fit()
    before = s.served_digest()
    with pytest.raises(ValueError, match="at least one"):
        s.unlearn([])
    with pytest.raises(UnknownTaskError, match="not merged"):
        s.unlearn(["nope"])
    with pytest.raises(DuplicateTaskError, match="repeated"):
        s.unlearn(["s01", "s01"])
    s.unlearn(["s01"])
    with pytest.raises(UnknownTaskError, match="already unlearned"):
        s.unlearn(["s01"])
    after = s.served_digest()
    assert after != before
    with pytest.raises(UnknownTaskError):
        s.unlearn(["s02", "zzz"])
    assert s.served_digest() == after


def test_changed_hyperparameter_is_refused(tiny):
    s = UnlearningSystem(tiny, "merge").fit()
    before = s.served_digest()
    from dataclasses import replace
    tiny2 = tiny.subset(len(tiny.tasks))
    tiny2.finetune_config = replace(tiny.finetune_config, lr=tiny.finetune_config.lr * 1.01)
    s.setting = tiny2
    with pytest.raises(ExactnessError, match="Nothing was unlearned"):
        s.unlearn(["s04"])
    s.setting = tiny
    assert s.served_digest() == before


def test_every_registered_method_is_known():
    assert {"merge", "local"} <= set(METHODS)


STREAMED = [("merge", {"alpha": "val"}), ("sift", {}), ("sift-random-mask", {}), ("tall", {}), ("emr", {}),
            ("emr", {"clusters": 3, "cluster_by": "random"}), ("ties", {}), ("consensus", {}),
            ("cluster-merge", {"clusters": 3, "cluster_by": "random"}),
            ("clamu", {**METHODS["clamu"].test_params, "clusters": 3, "cluster_by": "random"}),
            ("tall", {"clusters": 3, "cluster_by": "task-vectors"}),
            ("cluster-merge", {"clusters": 3, "cluster_by": "task-vectors"}),
            ("clamu", {**METHODS["clamu"].test_params, "clusters": 3, "cluster_by": "task-vectors"})]


@pytest.mark.parametrize("method, params", STREAMED, ids=lambda v: v if isinstance(v, str) else ",".join(map(str, v.values())))
def test_a_fit_with_a_store_streams_its_finetunes_in_chunks_with_the_same_bits(tmp_path, monkeypatch, method, params):
    """With a store, methods that read τ_t one at a time (``streams_vectors``) are fitted from
    chunks of finetunes merged and let go, then read back lazily: never more than a chunk of
    τ_t at once, and the same served bits as the in-memory fit; unlearning stays exact."""
    from clamu_helpers.settings.synthetic import SyntheticSetting
    from clamu_helpers.training import parallel
    from clamu_helpers.training.store import StoredVectors, TaskVectorStore
    from clamu_helpers.unlearning import system as system_module
    setting = SyntheticSetting(tasks=8)
    assert UnlearningSystem(setting, method, **params).method.streams_vectors
    monkeypatch.setattr(system_module, "FIT_CHUNK", 3)
    calls, seen = [], []
    real_run, real_fit = system_module.run_finetunes, METHODS[method].fit
    monkeypatch.setattr(system_module, "run_finetunes", lambda s, ids, **kw: calls.append(len(ids)) or real_run(s, ids, **kw))
    monkeypatch.setattr(METHODS[method], "fit", lambda self, ctx, vectors: seen.append(type(vectors)) or real_fit(self, ctx, vectors))
    store = TaskVectorStore(tmp_path / "store")
    streamed = UnlearningSystem(setting, method, store=store, **params).fit()
    assert calls == [3, 3, 2] and seen == [StoredVectors]
    in_memory = UnlearningSystem(setting, method, **params).fit()
    assert streamed.served_digest() == in_memory.served_digest()
    keys = parallel.store_keys(setting, setting.task_ids, 0, store, device="cpu",
                               **streamed.method.finetune_kwargs(streamed.context()))
    assert all(store.get(k, setting.spec) is not None for k in keys.values())   # the keys the fit filed
    del calls[:]
    streamed.unlearn(["s02", "s05"])
    # τ_u retrained at once; a state rebuilt from every remaining τ_t retrains them a chunk at a time
    # (cluster-merge retrains only the clusters random re-clustering changed: not counted here)
    rebuilds = method in ("tall", "emr", "ties", "consensus") or params.get("cluster_by") == "task-vectors"
    if method != "cluster-merge":
        assert calls == ([2, 3, 3] if rebuilds else [2])
        assert streamed.unlearn_costs.finetunes == (8 if rebuilds else 2)   # one round each, however chunked
    fresh = UnlearningSystem(setting, method, store=store, **params).fit([t for t in setting.task_ids if t not in ("s02", "s05")])
    assert streamed.served_digest() == fresh.served_digest()


@pytest.mark.parametrize("method, params", [("local", {}), ("tall", {"vectors": "keep"})])
def test_a_fit_that_keeps_every_vector_holds_them(tmp_path, method, params):
    """A method that keeps its τ_t holds them anyway: those fits get every τ_t in memory."""
    from clamu_helpers.settings.synthetic import SyntheticSetting
    from clamu_helpers.training.store import TaskVectorStore
    system = UnlearningSystem(SyntheticSetting(tasks=4), method, store=TaskVectorStore(tmp_path / "store"), **params)
    assert not (system.method.streams_vectors and not system.method.keeps_vectors)


def test_stored_vectors_name_a_task_the_store_lost(tmp_path):
    from clamu_helpers.core.ledger import MergeLedger
    from clamu_helpers.settings.synthetic import SyntheticSetting
    from clamu_helpers.training.store import StoredVectors, TaskVectorStore
    from clamu_helpers import StateError
    setting = SyntheticSetting(tasks=2)
    lazy = StoredVectors(TaskVectorStore(tmp_path / "store"), {"s00": "0" * 64}, setting.spec, MergeLedger(setting.spec))
    assert list(lazy) == ["s00"] and len(lazy) == 1
    with pytest.raises(StateError, match="lost τ_t of task 's00'"):
        lazy["s00"]
