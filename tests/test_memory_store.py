"""The in-memory store: the disk store's interface in RAM, and the default of a system without
a store, so that every fit runs the one streamed pipeline."""
import gc
import weakref

import pytest
import torch

from clamu_helpers import StateError, UnlearningSystem
from clamu_helpers.core.params import ParamSpec
from clamu_helpers.core.taskvector import TaskVector
from clamu_helpers.methods import METHODS
from clamu_helpers.training.memory_store import MemoryStore


def _tv(tid="t0", n=10, seed=0):
    spec = ParamSpec(("w",), ((n,),))
    return TaskVector(tid, torch.randn(n, generator=torch.Generator().manual_seed(seed)), spec, {"setting": "x"}), spec


def test_a_memory_store_copies_in_and_out_and_refuses_a_changed_vector():
    tv, spec = _tv()
    store = MemoryStore()
    store.put("k", tv)
    original = tv.values.clone()
    tv.values.add_(1.0)                                # the caller's tensor changes: the stored one does not
    got = store.get("k", spec)
    assert "k" in store and len(store) == 1 and store.keys() == ["k"]
    assert torch.equal(got.values, original)
    got.values.zero_()                                 # nor through what get returned
    held = store.open("k", spec)
    assert torch.equal(torch.cat(list(held.chunks(3))), original) and held.task_id == "t0"
    assert store.get("missing", spec) is None
    with pytest.raises(FileNotFoundError, match="not in this memory store"):
        store.open("missing")
    held._values.add_(1.0)                             # corrupted in place (only a bug could): caught on read
    with pytest.raises(StateError, match="changed after it was filed"):
        store.get("k", spec)
    with pytest.raises(StateError, match="changed after it was filed"):
        list(held.chunks(4))


def test_a_memory_store_purges_forgotten_tasks_and_masks():
    store = MemoryStore()
    for i, t in enumerate(("a", "b")):
        store.put(t, _tv(t, seed=i)[0])
    store.put_mask("m", torch.zeros(2, dtype=torch.uint8), 10, "a")
    assert store.get_mask("m")[1]["d"] == 10
    assert sorted(store.purge("x", ["a"])) == ["a", "m"]
    assert store.keys() == ["b"]
    with pytest.raises(FileNotFoundError):
        store.open_mask("m")


@pytest.mark.parametrize("method, params", [("merge", {"alpha": "val"}), ("tall", {"clusters": 2, "cluster_by": "task-vectors"})])
def test_a_system_without_a_store_streams_through_one_in_memory_and_lets_it_go(monkeypatch, method, params):
    """No store given: the fit still goes the streamed way (the method gets τ_t read lazily,
    checked against the ledger), through a MemoryStore that is let go after the fit."""
    from clamu_helpers.settings.synthetic import SyntheticSetting
    from clamu_helpers.training.store import StoredVectors
    from clamu_helpers.unlearning import system as system_module
    stores, seen = [], []
    real_fit = METHODS[method].fit
    monkeypatch.setattr(system_module, "MemoryStore", lambda: stores.append(MemoryStore()) or stores[-1])
    monkeypatch.setattr(METHODS[method], "fit", lambda self, ctx, vectors: seen.append(type(vectors)) or real_fit(self, ctx, vectors))
    system = UnlearningSystem(SyntheticSetting(tasks=5), method, **params).fit()
    assert seen == [StoredVectors] and len(stores) == 1 and len(stores[0]) == 5 and system.store is None
    gone = weakref.ref(stores.pop())
    gc.collect()
    assert gone() is None                              # the system holds no τ_t after its fit
    before = system.served_digest()
    system.unlearn(["s01"])
    fresh = UnlearningSystem(SyntheticSetting(tasks=5), method, **params).fit([t for t in system.setting.task_ids if t != "s01"])
    assert system.served_digest() == fresh.served_digest() != before
