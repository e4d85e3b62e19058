"""Clustering tasks (draft Algorithm 1 ``Cluster``, Section 4.1): by task vectors, by features, at random.

Every function returns ``dict[task_id, cluster_id]`` in canonical form: clusters are numbered
0, 1, … in the order of their smallest task id (string order), so the same partition always
gets the same labels whatever the algorithm's internal numbering. Results are pure functions
of (the set of task ids, their data/vectors, K, seed): ids are sorted first, seeds come from
:func:`clamu_helpers.runtime.determinism.stable_seed`, and scikit-learn runs on one thread.

* :func:`task_vector_clusters`: affinity A_ij = cos(τ_i, τ_j) and
  ``SpectralClustering(affinity="precomputed")``. Spectral clustering needs A ≥ 0 while cosine
  can be negative: ``negative="clip"`` (default) uses max(cos, 0), keeping the contrast between
  unrelated (cos ≈ 0) and related tasks; ``"shift"`` uses (1 + cos)/2.
* :func:`feature_clusters`: the mean of M0's last hidden features over each task's training
  inputs, clustered by KMeans (default) or spectral clustering of their cosines. The draft uses
  "hidden features at the last layer and last token of the model"; settings say what that is
  through ``setting.cluster_features(x)`` (see :func:`hidden_features`): the final hidden state
  at the last non-padding token for the GPT-2 models (``fictitious-authors``, ``paper-sent140``,
  ``paper-reddit``, ``paper-tofu``) and the mean-pooled final-layer sentence embedding for the
  bidirectional MiniLM encoder (``reviews-by-movie``, ``fortunes-label-subsets``; the same for
  both heads). Settings without the method (the MLPs, CLIP) fall back to the input of the
  model's last ``nn.Linear`` (the penultimate features).
* :func:`random_clusters`: a seeded balanced partition (sizes differ by at most one).
"""
from __future__ import annotations

import warnings
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..runtime.determinism import deterministic, rng, stable_seed
from ..core.errors import ShapeMismatchError
from .affinity import NEGATIVE, affinity_from_blocks, cosine_affinity, gram_chunk

CLUSTER_BY = ("task-vectors", "features", "random")


def _sklearn_seed(*keys) -> int:
    return stable_seed(*keys) % (2 ** 32)


def _single_thread():
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1)


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"the number of clusters K must be an integer ≥ 1, got {k!r}")
    if n == 0:
        raise ValueError("cannot cluster an empty set of tasks")
    return int(k)


def canonical(assignment: Mapping[Hashable, int]) -> dict[str, int]:
    """Relabel clusters 0, 1, … in the order of their smallest task id (ids as strings)."""
    first: dict[int, str] = {}
    by_str = {str(t): int(c) for t, c in assignment.items()}
    for tid in sorted(by_str):
        first.setdefault(by_str[tid], tid)
    order = {c: i for i, c in enumerate(sorted(first, key=first.__getitem__))}
    return {tid: order[c] for tid, c in sorted(by_str.items())}


def members(assignment: Mapping[str, int]) -> dict[int, tuple[str, ...]]:
    """cluster id → its sorted task ids."""
    out: dict[int, list[str]] = {}
    for tid, c in sorted(assignment.items()):
        out.setdefault(int(c), []).append(tid)
    return {c: tuple(v) for c, v in sorted(out.items())}


def singletons(ids: Sequence[str]) -> dict[str, int]:
    """Every task its own cluster (K = T): cluster i is the i-th smallest id."""
    return {t: i for i, t in enumerate(sorted(str(t) for t in ids))}


# -- task vectors -------------------------------------------------------------------------------
def spectral_clusters(affinity: np.ndarray, ids: Sequence[str], k: int, seed: int = 0,
                      assign_labels: str = "kmeans") -> dict[str, int]:
    """``sklearn.cluster.SpectralClustering(affinity="precomputed")`` on a T×T affinity whose
    rows follow ``ids``; seeded, single-threaded, canonical labels. K ≥ T gives singletons."""
    from sklearn.cluster import SpectralClustering

    ids = [str(t) for t in ids]
    k = _check_k(k, len(ids))
    a = np.asarray(affinity, dtype=np.float64)
    if a.shape != (len(ids), len(ids)):
        raise ShapeMismatchError(f"affinity has shape {a.shape}, expected {(len(ids), len(ids))}")
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise ValueError("the affinity must be finite and non-negative")
    if k >= len(ids):
        return singletons(ids)
    if k == 1:
        return {t: 0 for t in sorted(ids)}
    sc = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels=assign_labels,
                            random_state=_sklearn_seed(seed, "spectral", k))
    with _single_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "graph is not fully connected" when cos ≤ 0 is clipped
        labels = sc.fit_predict(a)
    return canonical(dict(zip(ids, labels.tolist())))


def task_vector_clusters(vectors: Mapping[str, torch.Tensor], k: int, seed: int = 0, negative: str = "clip",
                         assign_labels: str = "kmeans") -> dict[str, int]:
    """Cluster tasks by the cosine affinity of their task vectors τ_t (draft Algorithm 1).

    ``vectors``: task id → flat τ_t, or τ_t read from a store (a mapping with
    ``column_blocks(ids, chunk)``, such as :class:`~clamu_helpers.training.store.StoredVectors`),
    which is read a block of columns at a time: memory flat in d, the same affinity bit for bit."""
    ids = sorted(str(t) for t in vectors)
    _check_k(k, len(ids))
    if k >= len(ids):
        return singletons(ids)
    if hasattr(vectors, "column_blocks"):
        aff = affinity_from_blocks(vectors.column_blocks(ids, gram_chunk(len(ids))), negative)
    else:
        by_str = {str(t): v for t, v in vectors.items()}
        aff = cosine_affinity([by_str[t] for t in ids], negative=negative)
    return spectral_clusters(aff, ids, k, seed=seed, assign_labels=assign_labels)


# -- features -----------------------------------------------------------------------------------
def _last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            last = mod
    if last is None:
        raise ShapeMismatchError("the model has no nn.Linear; give the setting a cluster_features(x) method")
    return last


@torch.no_grad()
def hidden_features(setting, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """M0's last hidden features of inputs ``x``, ``(N, h)`` float32.

    ``setting.cluster_features(x)`` if the setting defines it: the GPT-2 settings return the
    final hidden state at the last non-padding token (the draft's "last layer and last token"),
    the MiniLM text settings the mean-pooled final-layer embedding (head-independent); each
    computes it with M0 in batches, without gradients and on one pinned thread. Otherwise
    (the MLPs, CLIP) the input of the last ``nn.Linear`` of ``setting.model``, captured by a
    forward hook in batches of ``batch`` rows. The fallback suits a model whose last linear
    layer is its head; it flattens whatever that layer sees, so sequence models define
    ``cluster_features``."""
    hook_fn = getattr(setting, "cluster_features", None)
    if callable(hook_fn):
        return torch.as_tensor(hook_fn(x)).reshape(len(x), -1).to(torch.float32)
    model = setting.model
    captured: list[torch.Tensor] = []
    handle = _last_linear(model).register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    try:
        with deterministic(1):
            for i in range(0, len(x), batch):
                model(x[i:i + batch])
    finally:
        handle.remove()
    return torch.cat(captured).reshape(len(x), -1).to(torch.float32)


def task_features(setting, ids: Sequence[str], split: str = "train") -> np.ndarray:
    """Mean hidden feature per task over its ``split`` inputs: (T, h) float64, rows in ``ids`` order.

    A task's row depends only on M0 and the task's inputs, both fixed for the life of a setting,
    so it is computed once per setting (kept on it, keyed by M0's and the task's identity and the
    split; :meth:`Setting.subset` copies share it) and reused by every clustered fit and refresh:
    the same bits, without M0's forward pass over every task at every fit."""
    memo = setting.__dict__.setdefault("_task_feature_rows", {})
    model = getattr(setting, "model", None)
    rows = []
    for tid in ids:
        task = setting.task(tid)
        key = (id(model), id(task), split)
        if key not in memo:
            x, _ = task.split(split)
            if len(x) == 0:
                raise ValueError(f"task {tid!r} has no {split} inputs to take features from")
            memo[key] = (model, task, hidden_features(setting, x).to(torch.float64).mean(0))
        rows.append(memo[key][2])
    return torch.stack(rows).numpy()


def feature_clusters(setting, ids: Sequence[str], k: int, seed: int = 0, algorithm: str = "kmeans",
                     negative: str = "clip", split: str = "train") -> dict[str, int]:
    """Cluster tasks by their mean hidden features (draft Section 4.1): KMeans (``n_init=10``) or
    spectral clustering of the features' cosine affinity; seeded and canonical."""
    from sklearn.cluster import KMeans

    ids = sorted(str(t) for t in ids)
    k = _check_k(k, len(ids))
    if k >= len(ids):
        return singletons(ids)
    feats = task_features(setting, ids, split)
    if algorithm == "spectral":
        aff = cosine_affinity([torch.from_numpy(f) for f in feats], negative=negative)
        return spectral_clusters(aff, ids, k, seed=seed)
    if algorithm != "kmeans":
        raise ValueError(f"algorithm must be 'kmeans' or 'spectral', got {algorithm!r}")
    if k == 1:
        return {t: 0 for t in ids}
    km = KMeans(n_clusters=k, n_init=10, random_state=_sklearn_seed(seed, "kmeans", k))
    with _single_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than clusters
        labels = km.fit_predict(feats)
    return canonical(dict(zip(ids, labels.tolist())))


# -- random -------------------------------------------------------------------------------------
def random_clusters(ids: Sequence[str], k: int, seed: int = 0) -> dict[str, int]:
    """A seeded balanced random partition into min(K, T) clusters (sizes differ by ≤ 1): the
    sorted ids are permuted by ``rng(seed, "random-clusters", K)`` and dealt round-robin.
    A pure function of the id set, so removing a task may move others (re-clustering)."""
    ids = sorted(str(t) for t in ids)
    k = _check_k(k, len(ids))
    perm = rng(seed, "random-clusters", k).permutation(len(ids))
    return canonical({ids[int(j)]: i % k for i, j in enumerate(perm)})


def cluster_tasks(ids: Sequence[str], k: int | None, by: str = "task-vectors", seed: int = 0,
                  vectors: Mapping[str, torch.Tensor] | None = None, setting=None,
                  negative: str = "clip", feature_algorithm: str = "kmeans") -> dict[str, int]:
    """One entry point: K = None (or K ≥ T) → one cluster per task; else cluster ``by``
    "task-vectors" (needs ``vectors``: flat τ_t by task id, or τ_t streamed from a store, see
    :func:`task_vector_clusters`), "features" (needs ``setting``) or "random"."""
    ids = sorted(str(t) for t in ids)
    if by not in CLUSTER_BY:
        raise ValueError(f"cluster_by must be one of {CLUSTER_BY}, got {by!r}")
    if not ids:
        return {}
    if k is None:
        return singletons(ids)
    _check_k(k, len(ids))
    if by == "task-vectors":
        if vectors is None:
            raise ValueError("clustering by task vectors needs the vectors")
        subset = vectors.subset(ids) if hasattr(vectors, "subset") else {t: vectors[t] for t in ids}
        return task_vector_clusters(subset, k, seed=seed, negative=negative)
    if by == "features":
        if setting is None:
            raise ValueError("clustering by features needs the setting")
        return feature_clusters(setting, ids, k, seed=seed, algorithm=feature_algorithm, negative=negative)
    return random_clusters(ids, k, seed=seed)


__all__ = ["CLUSTER_BY", "NEGATIVE", "canonical", "cluster_tasks", "cosine_affinity", "feature_clusters", "hidden_features", "members", "random_clusters", "singletons", "spectral_clusters", "task_features",
           "task_vector_clusters"]
