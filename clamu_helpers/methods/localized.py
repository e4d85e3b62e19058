"""What the localization methods share: clusters, the remaining τ_t, serving per cluster.

TALL, EMR, ClAMU (and its control) and cluster-merge serve a task from the exact merge τ̄ plus
a small per-cluster state, and after unlearning recompute that state so that it is
bit-identical to a from-scratch fit on the remaining tasks (the audit): tasks are re-clustered
(draft Algorithm 1, ``Unlearn``: L30), then masks/scales are recomputed. Everything is a pure
function of the set of remaining tasks: ids are sorted, cluster labels are canonical, seeds come
from (system seed, cluster members), and cluster sums are exact :class:`MergeLedger` sums.

Common parameters (declared in ``Localized.Params``, read as ``self.p``):

* ``clusters``: None = one cluster per task (task-level masks), or K.
* ``cluster_by``: "task-vectors" (cosine affinity + spectral), "features" or "random"
  (see :mod:`clamu_helpers.localization.clustering`); ``negative`` ("clip" | "shift") maps cosines to a
  non-negative affinity; ``feature_algorithm`` ("kmeans" | "spectral").
* ``vectors``: how a refresh gets the remaining τ_t when it needs them (TALL, EMR,
  cluster-merge, and task-vector clusters): "retrain" (default) or "keep"
  (:mod:`clamu_helpers.methods.remaining`).

A task without a cluster (forgotten or unknown) is served the fallback M0 + τ̄/T (model
averaging over the T merged tasks; M0 when T = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from ..runtime.progress import tqdm

from ..localization.clustering import CLUSTER_BY, NEGATIVE, cluster_tasks, members
from ..core.errors import StateError
from ..localization.masks import masked_weights, storage_bytes
from ..core.packing import unpack
from .base import Params
from .basic import alpha_param
from .declared import Integer, Options, one_over_t, param
from .remaining import UsesRemainingVectors, vectors_param

#: what TALL and EMR take as "the local task vector" of a cluster k: "sum" = τ_k = Σ_{t∈k} τ_t
#: (its share of τ̄, on τ̄'s scale: TALL's default) or "mean" = τ_k/|k| (the cluster's merged
#: model, draft Sec. 4.3 and Figure 4: EMR's default)
CLUSTER_VECTOR = ("sum", "mean")


#: τ_t added at a time to a cluster's exact sum (the same integers as adding all at once): a
#: cluster's sum holds this many τ_t in memory, however large the cluster
SUM_CHUNK = 32


def add_in_chunks(ledger, ids, vectors) -> None:
    """``ledger`` += Σ_{t∈ids} τ_t, reading :data:`SUM_CHUNK` τ_t at a time from ``vectors``
    (a dict or τ_t read lazily from a store)."""
    ids = list(ids)
    for start in range(0, len(ids), SUM_CHUNK):
        ledger.add_many((t, vectors[t]) for t in ids[start:start + SUM_CHUNK])


def fallback_weights(ctx) -> torch.Tensor:
    """M0 + τ̄/T, served to a task that has no cluster (forgotten or unknown); M0 if T = 0."""
    n = len(ctx.ledger)
    theta0 = ctx.setting.theta0
    return theta0 if n == 0 else theta0 + one_over_t(n) * ctx.tau_bar


class Localized(UsesRemainingVectors):
    """Shared machinery: clustering, obtaining the remaining τ_t, serving per cluster."""

    clustered = True
    cost_rule = "retrain-all"

    @dataclass
    class Params(Params):
        clusters: int | None = param(None, Integer(), none=True)    # None: one cluster per task; else K
        cluster_by: str = param("task-vectors", Options(*CLUSTER_BY))   # "task-vectors", "features" or "random"
        vectors: str = vectors_param()          # how a refresh gets the remaining τ_t: "retrain" or "keep"
        negative: str = param("clip", Options(*NEGATIVE))    # how cosines map to a non-negative affinity
        feature_algorithm: str = param("kmeans", Options("kmeans", "spectral"))   # feature clusters

    def __init__(self, **params):
        super().__init__(**params)
        self.assignment: dict[str, int] = {}

    # -- what a refresh needs ------------------------------------------------------------------
    def clusters_need_vectors(self) -> bool:
        return self.p.clusters is not None and self.p.cluster_by == "task-vectors"

    def unlearning_cost(self, n_before, n_forgotten, steps):
        """:meth:`UsesRemainingVectors.unlearning_cost`, then the method's own rounds
        (:meth:`refit_cost`)."""
        return self.refit_cost(super().unlearning_cost(n_before, n_forgotten, steps), n_before - n_forgotten, steps)

    def refit_cost(self, costs, n_tasks: int, steps: int):
        """Gradient steps of recomputing the state for ``n_tasks`` tasks (default: none)."""
        return costs

    def n_clusters(self, n_tasks: int) -> int:
        k = self.p.clusters
        return n_tasks if k is None else min(int(k), n_tasks)

    # -- life cycle ------------------------------------------------------------------------------
    def fit(self, ctx, vectors):
        self._rebuild(ctx, vectors, ctx.costs)   # a mapping: a dict, or τ_t read lazily from the store

    def refresh(self, ctx, removed, retrained):
        vecs = self.remaining_vectors(ctx, ctx.task_ids) if self.needs_vectors() else None
        self._rebuild(ctx, vecs, ctx.costs)

    def cluster(self, ctx, vectors) -> dict[str, int]:
        """Canonical assignment task id → cluster of the tasks merged now."""
        p = self.p
        vals = None
        if self.clusters_need_vectors():   # τ_t from a store are read a block of columns at a time
            vals = (vectors if hasattr(vectors, "column_blocks")    # cluster_tasks takes the subset
                    else {t: vectors[t].values for t in ctx.task_ids})
        return cluster_tasks(ctx.task_ids, p.clusters, p.cluster_by, seed=ctx.seed, vectors=vals,
                             setting=ctx.setting, negative=p.negative, feature_algorithm=p.feature_algorithm)

    def _rebuild(self, ctx, vectors, costs) -> None:
        self.assignment = self.cluster(ctx, vectors)
        self.localize(ctx, vectors, costs)

    def localize(self, ctx, vectors, costs) -> None:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def groups(self) -> dict[int, tuple[str, ...]]:
        return members(self.assignment)

    def group_of(self, ctx, task_id):
        c = self.assignment.get(str(task_id))
        return "fallback" if c is None else f"cluster-{c}"

    def group_vector(self, ctx, ids, vectors) -> torch.Tensor:
        """The cluster's local vector: τ_k = Σ_{t∈k} τ_t summed exactly, divided by |k| when
        ``cluster_vector`` is "mean" (a one-task cluster is τ_t itself either way)."""
        if len(ids) == 1:
            return vectors[ids[0]].values
        led = ctx.ledger.empty_like()
        add_in_chunks(led, ids, vectors)
        tau_k = led.tau_bar()
        return tau_k / len(ids) if getattr(self.p, "cluster_vector", "mean") == "mean" else tau_k

    @staticmethod
    def group_data(ctx, ids, split) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [ctx.setting.task(t).split(split) for t in ids]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _bar(self, ctx, items, desc):
        return tqdm(items, desc=f"{self.name}: {desc}", disable=not ctx.progress, leave=False)

    def _meta(self) -> dict:
        return {"assignment": dict(sorted(self.assignment.items()))}

    def _load_assignment(self, meta) -> None:
        try:
            self.assignment = {str(t): int(c) for t, c in meta["assignment"].items()}
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            raise StateError(f"saved {self.name!r} state has no valid cluster assignment") from e

    def _load_masks(self, ctx, tensors) -> dict[int, torch.Tensor]:
        d = ctx.setting.spec.numel
        packed = tensors.get("masks")
        k = len(self.groups)
        if packed is None or packed.dtype != torch.uint8 or (k and tuple(packed.shape) != (k, (d + 7) // 8)):
            raise StateError(f"saved {self.name!r} masks do not match {k} clusters over d={d}")
        return {c: packed[i].clone() for i, c in enumerate(self.groups)}


class Masked(Localized):
    """Methods serving M0 + α m_k ⊙ v from one packed mask per cluster (v = τ̄ unless
    :meth:`target` says otherwise). ``alpha`` is a number, ``"mean"`` (1/T) or ``"val"``
    (chosen on validation data during fit and refresh; the choice is in ``self.chosen``)."""

    scale_param = "alpha"

    @dataclass
    class Params(Localized.Params):
        alpha: float | str = alpha_param("val")     # a positive number, "1/T" or "val"

    def __init__(self, **params):
        super().__init__(**params)
        self.masks: dict[int, torch.Tensor] = {}

    def alpha(self, ctx) -> float:
        """α as served (chosen, 1/T or the number given)."""
        return float(self.resolve("alpha", len(ctx.ledger)))

    def target(self, ctx) -> torch.Tensor:
        """The vector the masks select from: τ̄."""
        return ctx.tau_bar

    def mask(self, ctx, c) -> torch.Tensor:
        return unpack(self.masks[c], ctx.setting.spec.numel)

    def weights_for(self, ctx, task_id):
        c = self.assignment.get(str(task_id))
        if c is None:
            return fallback_weights(ctx)
        return masked_weights(ctx.setting.theta0, self.mask(ctx, c), self.target(ctx), self.alpha(ctx))

    def served_params(self, ctx):
        return {"alpha": self.alpha(ctx), **{k: v for k, v in self.chosen.items() if k != "alpha"}} \
            if self.masks else {}

    def mask_density(self, ctx):
        if not self.masks:
            return None
        d = ctx.setting.spec.numel
        return float(sum(int(self.mask(ctx, c).sum()) for c in self.masks) / (d * len(self.masks)))

    def _packed(self) -> torch.Tensor:
        return torch.stack([self.masks[c] for c in self.groups]) if self.masks else torch.zeros((0, 0), dtype=torch.uint8, device="cpu")

    def storage_bytes(self, ctx):
        k = len(self.masks)
        return storage_bytes(ctx.setting.spec.numel, 1, k, self.n_scalars()) + self.extra_vector_bytes(ctx)

    def n_scalars(self) -> int:
        return 0

    def _meta(self) -> dict:
        meta = super()._meta()
        if self.chosen:
            meta["chosen"] = dict(self.chosen)
        return meta

    def _load_chosen(self, meta) -> None:
        self.chosen = dict(meta.get("chosen", {}))
        if self.assignment:
            self.require_chosen(what=repr(self.name))


def weighted_mean(scores: list[tuple[float, int]]) -> float:
    """Mean of (score, weight) pairs ignoring NaN scores (NaN when nothing is left)."""
    pairs = [(s, w) for s, w in scores if s == s]
    total = sum(w for _, w in pairs)
    return sum(s * w for s, w in pairs) / total if total else float("nan")


__all__ = ["CLUSTER_VECTOR", "Localized", "Masked", "fallback_weights", "weighted_mean"]
