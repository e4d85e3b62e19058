"""Clustering: planted clusters are recovered, results are deterministic and canonical."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clamu_helpers.localization.clustering import (canonical, cluster_tasks, cosine_affinity, feature_clusters, hidden_features,
                                      members, random_clusters, singletons, task_features, task_vector_clusters)


def _partition(assign):
    return {frozenset(v) for v in members(assign).values()}


def _planted(n_groups=3, per=5, d=2000, noise=0.4, seed=0):
    """Noisy copies of ``n_groups`` random directions, ids interleaved across groups."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_groups, d, generator=g)
    vecs, truth = {}, {}
    order = torch.randperm(n_groups * per, generator=g).tolist()
    for i, j in enumerate(order):
        grp = j % n_groups
        tid = f"t{i:02d}"
        vecs[tid] = dirs[grp] * (0.5 + torch.rand((), generator=g)) + noise * torch.randn(d, generator=g)
        truth[tid] = grp
    return vecs, truth


@pytest.mark.parametrize("negative", ["clip", "shift"])
def test_task_vector_clusters_recover_planted_groups(negative):
    vecs, truth = _planted()
    got = task_vector_clusters(vecs, 3, seed=0, negative=negative)
    assert _partition(got) == _partition(truth)
    # deterministic, and independent of the mapping's insertion order
    again = task_vector_clusters(dict(reversed(list(vecs.items()))), 3, seed=0, negative=negative)
    assert got == again
    assert set(got.values()) == {0, 1, 2} and got["t00"] == 0


def test_cosine_affinity_matches_numpy():
    vecs = [torch.randn(300, generator=torch.Generator().manual_seed(i)) for i in range(4)] + [torch.zeros(300)]
    a = np.stack([v.numpy().astype(np.float64) for v in vecs])
    n = np.linalg.norm(a, axis=1)
    cos = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            cos[i, j] = 1.0 if i == j else (a[i] @ a[j] / (n[i] * n[j]) if n[i] * n[j] > 0 else 0.0)
    assert (cos < 0).any()
    np.testing.assert_allclose(cosine_affinity(vecs, "clip", chunk=64), np.maximum(cos, 0), atol=1e-12)
    np.testing.assert_allclose(cosine_affinity(vecs, "shift"), (1 + cos) / 2, atol=1e-12)
    with pytest.raises(ValueError):
        cosine_affinity(vecs, "abs")


def test_canonical_relabelling():
    assert canonical({"b": 5, "a": 7, "c": 5, "d": 2}) == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert singletons(["b", "a"]) == {"a": 0, "b": 1}
    assert members({"b": 1, "a": 0, "c": 1}) == {0: ("a",), 1: ("b", "c")}


def test_random_clusters_balanced_seeded_canonical():
    ids = [f"x{i}" for i in range(23)]
    a = random_clusters(ids, 5, seed=1)
    sizes = sorted(len(v) for v in members(a).values())
    assert sizes == [4, 4, 5, 5, 5] and set(a) == set(ids)
    assert a == random_clusters(list(reversed(ids)), 5, seed=1)
    assert _partition(a) != _partition(random_clusters(ids, 5, seed=2))
    assert random_clusters(ids[:3], 5) == singletons(ids[:3])
    with pytest.raises(ValueError):
        random_clusters(ids, 0)


def test_hidden_features_fall_back_to_input_of_last_linear(tiny):
    x = tiny.tasks[0].train[0]
    lin1 = tiny.model[0]
    expect = torch.relu(x @ lin1.weight.T + lin1.bias)
    assert torch.allclose(hidden_features(tiny, x), expect, atol=1e-6)
    feats = task_features(tiny, ["s00", "s01"])
    assert feats.shape == (2, tiny.hidden)
    x1 = tiny.task("s01").train[0]
    expect1 = torch.relu(x1 @ lin1.weight.T + lin1.bias).detach().double().mean(0)
    np.testing.assert_allclose(feats[1], expect1.numpy(), atol=1e-6)


def test_task_features_are_computed_once_per_setting_with_the_same_bits(monkeypatch):
    import clamu_helpers.localization.clustering as clustering
    from clamu_helpers.settings import get_setting
    s = get_setting("synthetic", "smoke", 3, tasks=4)
    fresh = np.stack([hidden_features(s, s.task(t).train[0]).double().mean(0).numpy() for t in s.task_ids])
    calls = []
    real = clustering.hidden_features
    monkeypatch.setattr(clustering, "hidden_features", lambda st, x, **k: calls.append(len(x)) or real(st, x, **k))
    first = task_features(s, s.task_ids)
    again = task_features(s.subset(3), s.task_ids[:3])      # a subset shares M0, the tasks and the memo
    assert np.array_equal(first, fresh) and np.array_equal(again, fresh[:3])
    assert len(calls) == 4
    task_features(s, s.task_ids, "val")                     # another split is other inputs
    assert len(calls) == 8


class _FeatureSetting:
    """A setting whose ``cluster_features`` hook returns inputs as they are; planted task means."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        centres = torch.randn(3, 6, generator=g) * 3
        self.tasks, self.truth = {}, {}
        for i in range(12):
            grp = (i * 7) % 3
            x = centres[grp] + torch.randn(20, 6, generator=g)
            self.tasks[f"k{i:02d}"] = SimpleNamespace(split=lambda name, x=x: (x, torch.zeros(len(x))))
            self.truth[f"k{i:02d}"] = grp

    def task(self, tid):
        return self.tasks[tid]

    def cluster_features(self, x):
        return x


@pytest.mark.parametrize("algorithm", ["kmeans", "spectral"])
def test_feature_clusters_recover_planted_groups(algorithm):
    st = _FeatureSetting()
    got = feature_clusters(st, list(st.tasks), 3, seed=0, algorithm=algorithm)
    assert _partition(got) == _partition(st.truth)
    assert got == feature_clusters(st, sorted(st.tasks, reverse=True), 3, seed=0, algorithm=algorithm)


def test_cluster_tasks_dispatch_and_errors(tiny):
    ids = tiny.task_ids
    assert cluster_tasks(ids, None) == singletons(ids)
    assert cluster_tasks(ids, 3, "random", seed=4) == random_clusters(ids, 3, seed=4)
    assert cluster_tasks(ids, 3, "features", setting=tiny) == feature_clusters(tiny, ids, 3)
    assert len(set(cluster_tasks(ids, 1, "features", setting=tiny).values())) == 1
    with pytest.raises(ValueError):
        cluster_tasks(ids, 3, "task-vectors")          # needs the vectors
    with pytest.raises(ValueError):
        cluster_tasks(ids, 3, "labels")
    with pytest.raises(ValueError):
        cluster_tasks(ids, 2.5, "random")


def _stored(tmp_path, vecs):
    """The flat vectors ``vecs`` (id → τ_t) filed in a store and merged: a StoredVectors over them."""
    from clamu_helpers.core.ledger import MergeLedger
    from clamu_helpers.core.params import ParamSpec
    from clamu_helpers.core.taskvector import TaskVector
    from clamu_helpers.runtime.cache import content_key
    from clamu_helpers.training.store import StoredVectors, TaskVectorStore
    d = next(iter(vecs.values())).numel()
    spec = ParamSpec(("w",), ((d,),))
    store, ledger, keys = TaskVectorStore(tmp_path / "store"), MergeLedger(spec), {}
    for t, v in vecs.items():
        tv = TaskVector(t, v.contiguous(), spec)
        keys[t] = content_key("planted", t)
        store.put(keys[t], tv)
        ledger.add(t, tv)
    return StoredVectors(store, keys, spec, ledger), store, keys


@pytest.mark.parametrize("chunk", [7, 2000, 1 << 16])
def test_clusters_of_stored_task_vectors_read_columns_not_whole_vectors_with_the_same_bits(tmp_path, monkeypatch, chunk):
    """From a store, the cosine affinity is built a block of columns at a time (never a whole
    τ_t: ``__getitem__`` is not called), bit for bit the in-memory one (block boundaries fixed
    by GRAM_CHUNK, including a narrow last block), and so are the clusters."""
    from clamu_helpers.localization import affinity
    from clamu_helpers.training.store import StoredVectors
    vecs, truth = _planted()
    lazy, _, _ = _stored(tmp_path, vecs)
    monkeypatch.setattr(affinity, "GRAM_CHUNK", chunk)
    monkeypatch.setattr(StoredVectors, "__getitem__", lambda self, t: pytest.fail(f"read whole τ_t of {t}"))
    ids = sorted(vecs)
    blocks = list(lazy.column_blocks(ids, chunk))
    assert len(blocks) == -(-2000 // chunk) and all(b.shape[0] == len(ids) for b in blocks)
    streamed = affinity.affinity_from_blocks(iter(blocks))
    in_memory = cosine_affinity([vecs[t] for t in ids])
    assert streamed.tobytes() == in_memory.tobytes()
    got = cluster_tasks(ids[:-1], 3, "task-vectors", seed=0, vectors=lazy)
    assert got == cluster_tasks(ids[:-1], 3, "task-vectors", seed=0, vectors=vecs)
    assert _partition(got) == _partition({t: truth[t] for t in ids[:-1]})


def test_clusters_of_stored_task_vectors_refuse_a_file_that_changed(tmp_path):
    """A stored τ_t whose bits differ from the ones merged is caught while streaming (hashed in
    the ledger's digest format as it is read): StateError names the task, no clusters come back."""
    from clamu_helpers import StateError
    vecs, _ = _planted()
    lazy, store, keys = _stored(tmp_path, vecs)
    path = store.path(keys["t03"])
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01                                   # one bit of the last value of τ_t03
    path.write_bytes(bytes(raw))
    with pytest.raises(StateError, match="t03"):
        cluster_tasks(sorted(vecs), 3, "task-vectors", seed=0, vectors=lazy)
    with pytest.raises(KeyError, match="nope"):
        list(lazy.column_blocks(["nope"], 64))


def test_gram_blocks_stay_flat_in_t_and_keep_the_bits_up_to_256_tasks():
    """A Gram block holds at most GRAM_BLOCK_VALUES values whatever T; up to T = 256 it is the
    65,536 columns of before, and the affinity has the bits of the plain stacked computation."""
    from clamu_helpers.localization import affinity
    assert affinity.gram_chunk(1) == affinity.gram_chunk(256) == 1 << 16
    assert affinity.gram_chunk(500) == (1 << 24) // 500
    assert all(t * affinity.gram_chunk(t) <= affinity.GRAM_BLOCK_VALUES for t in (257, 500, 5000))
    vecs = [torch.randn(70000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    gram = torch.zeros(3, 3, dtype=torch.float64)
    for start in range(0, 70000, 1 << 16):
        b = torch.stack([v[start:start + (1 << 16)] for v in vecs]).to(torch.float64)
        gram += b @ b.T
    norms = gram.diagonal().sqrt()
    cos = (gram / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    assert cosine_affinity(vecs, "shift").tobytes() == ((1.0 + cos) / 2.0).numpy().tobytes()
