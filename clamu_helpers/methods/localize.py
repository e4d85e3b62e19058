"""Localization methods: ``tall``, ``emr``, ``clamu`` (optimized masks) and ``cluster-merge``.

Each serves a task from the exact merge τ̄ plus a small per-cluster state, and after
unlearning recomputes that state so that it is bit-identical to a from-scratch fit on the
remaining tasks (the audit): tasks are re-clustered (draft Algorithm 1, ``Unlearn``: L30),
then masks/scales are recomputed. Everything is a pure function of the set of remaining tasks:
ids are sorted, cluster labels are canonical, seeds come from (system seed, cluster members),
and cluster sums are exact :class:`MergeLedger` sums.

Common parameters (JSON-able, in ``self.params``):

* ``clusters``: None = one cluster per task (task-level masks), or K.
* ``cluster_by``: "task-vectors" (cosine affinity + spectral), "features" or "random"
  (see :mod:`clamu_helpers.clustering`); ``negative`` ("clip" | "shift") maps cosines to a
  non-negative affinity; ``feature_algorithm`` ("kmeans" | "spectral").
* ``vectors``: how a refresh gets the remaining τ_t when it needs them (TALL, EMR,
  cluster-merge, and task-vector clusters). "retrain" (default): retrain them with
  ``system.finetune(ids, use_store=False)``, verify each hash against the ledger, and count
  (T−1)·E gradient steps and E parallel steps in ``system.unlearn_costs``. "keep": the system
  keeps every τ_t (``keeps_vectors``), counted as T·d·4 extra bytes of storage.

With clusters, TALL and EMR use the cluster's merged model as "the local task vector" (draft
Sec. 4.3): τ_k/|k| with τ_k = Σ_{t∈k} τ_t summed exactly (``cluster_vector="mean"``, default;
"sum" uses τ_k itself, which is |k| times too large to serve). A task without a cluster (forgotten or unknown) is served
the fallback M0 + τ̄/T (model averaging over the T merged tasks; M0 when T = 0).
"""
from __future__ import annotations

import hashlib
import json

import torch
from tqdm.auto import tqdm

from ..clustering import CLUSTER_BY, NEGATIVE, cluster_tasks, members
from ..determinism import generator
from ..errors import ExactnessError, ShapeMismatchError, StateError
from ..ledger import MergeLedger
from ..masks import (LAMBDA_GRID, EMRResult, MaskConfig, choose_lambda, emr, emr_elect, masked_weights, optimize_mask,
                     pack_masks, storage_bytes)
from ..packing import unpack
from .base import Method, register
from .basic import resolve_alpha

VECTORS = ("retrain", "keep")
#: what TALL and EMR take as "the local task vector" of a cluster k (draft Sec. 4.3: "the
#: per-cluster merged models from Figure 4"): "mean" = τ_k/|k| (the merged model's task vector,
#: default) or "sum" = τ_k (|k| times larger, which makes masks dense and served models broken)
CLUSTER_VECTOR = ("mean", "sum")


def fallback_weights(system) -> torch.Tensor:
    """M0 + τ̄/T, served to a task that has no cluster (forgotten or unknown); M0 if T = 0."""
    n = len(system.ledger)
    theta0 = system.setting.theta0
    return theta0 if n == 0 else theta0 + resolve_alpha("mean", n) * system.tau_bar


def _check_alpha(alpha) -> None:
    if alpha != "mean" and not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)):
        raise ValueError(f"alpha must be a number or 'mean', got {alpha!r}")


class Localized(Method):
    """Shared machinery: clustering, obtaining the remaining τ_t, serving per cluster."""

    def __init__(self, clusters=None, cluster_by="task-vectors", vectors="retrain", negative="clip",
                 feature_algorithm="kmeans", **specific):
        super().__init__()
        if specific.get("cluster_vector", "mean") not in CLUSTER_VECTOR:
            raise ValueError(f"cluster_vector must be one of {CLUSTER_VECTOR}, got {specific['cluster_vector']!r}")
        if clusters is not None and (isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 1):
            raise ValueError(f"clusters must be None (one per task) or an integer K ≥ 1, got {clusters!r}")
        if cluster_by not in CLUSTER_BY:
            raise ValueError(f"cluster_by must be one of {CLUSTER_BY}, got {cluster_by!r}")
        if vectors not in VECTORS:
            raise ValueError(f"vectors must be one of {VECTORS}, got {vectors!r}")
        if negative not in NEGATIVE:
            raise ValueError(f"negative must be one of {NEGATIVE}, got {negative!r}")
        if feature_algorithm not in ("kmeans", "spectral"):
            raise ValueError(f"feature_algorithm must be 'kmeans' or 'spectral', got {feature_algorithm!r}")
        self.params = {"clusters": clusters, "cluster_by": cluster_by, "vectors": vectors, "negative": negative,
                       "feature_algorithm": feature_algorithm, **specific}
        self.assignment: dict[str, int] = {}
        self.keeps_vectors = vectors == "keep" and self.needs_vectors()

    # -- what a refresh needs ------------------------------------------------------------------
    def clusters_need_vectors(self) -> bool:
        return self.params["clusters"] is not None and self.params["cluster_by"] == "task-vectors"

    def needs_vectors(self) -> bool:
        """Whether recomputing the state needs every remaining τ_t (default: yes)."""
        return True

    def remaining_vectors(self, system, ids) -> dict:
        """τ_t of ``ids`` after unlearning: kept by the system, or retrained and hash-checked
        (counted: len(ids)·E gradient steps, E parallel steps)."""
        ids = list(ids)
        if not ids:
            return {}
        if self.params["vectors"] == "keep":
            missing = [t for t in ids if t not in system.vectors]
            if missing:
                raise StateError(f"method {self.name!r} keeps vectors, but the system lacks {missing[:5]}")
            return {t: system.vectors[t] for t in ids}
        got = system.finetune(ids, use_store=False, desc="retrain remaining")
        recorded = system.ledger.hashes
        bad = [t for t in ids if t in recorded and got[t].sha256 != recorded[t]]
        if bad:
            raise ExactnessError(f"retrained task vectors of {bad[:5]} differ from the ones merged; "
                                 f"cannot recompute {self.name!r} exactly. Nothing was unlearned.")
        system.unlearn_costs.add(len(ids), len(ids) * system.steps, system.steps)
        return got

    # -- life cycle ------------------------------------------------------------------------------
    def fit(self, system, vectors):
        self._rebuild(system, dict(vectors), system.fit_costs)

    def refresh(self, system, removed):
        vecs = self.remaining_vectors(system, system.task_ids) if self.needs_vectors() else None
        self._rebuild(system, vecs, system.unlearn_costs)

    def cluster(self, system, vectors) -> dict[str, int]:
        """Canonical assignment task id → cluster of the tasks merged now."""
        p = self.params
        vals = None
        if self.clusters_need_vectors():
            vals = {t: vectors[t].values for t in system.task_ids}
        return cluster_tasks(system.task_ids, p["clusters"], p["cluster_by"], seed=system.seed, vectors=vals,
                             setting=system.setting, negative=p["negative"],
                             feature_algorithm=p["feature_algorithm"])

    def _rebuild(self, system, vectors, costs) -> None:
        self.assignment = self.cluster(system, vectors)
        self.localize(system, vectors, costs)

    def localize(self, system, vectors, costs) -> None:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def groups(self) -> dict[int, tuple[str, ...]]:
        return members(self.assignment)

    def group_of(self, system, task_id):
        c = self.assignment.get(str(task_id))
        return "fallback" if c is None else f"cluster-{c}"

    def group_vector(self, system, ids, vectors) -> torch.Tensor:
        """The cluster's local vector: τ_k = Σ_{t∈k} τ_t summed exactly, divided by |k| when
        ``cluster_vector`` is "mean" (a one-task cluster is τ_t itself either way)."""
        if len(ids) == 1:
            return vectors[ids[0]].values
        led = MergeLedger(system.setting.spec, system.ledger.scale_bits, system.ledger.max_tasks)
        led.add_many((t, vectors[t]) for t in ids)
        tau_k = led.tau_bar()
        return tau_k / len(ids) if self.params.get("cluster_vector", "mean") == "mean" else tau_k

    @staticmethod
    def group_data(system, ids, split) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [system.setting.task(t).split(split) for t in ids]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _bar(self, system, items, desc):
        return tqdm(items, desc=f"{self.name}: {desc}", disable=not system.progress, leave=False)

    def extra_vector_bytes(self, system) -> int:
        """T·d·4 bytes when the system keeps every τ_t for refreshes."""
        return 4 * system.setting.spec.numel * len(system.vectors) if self.keeps_vectors else 0

    def _meta(self) -> dict:
        return {"assignment": dict(sorted(self.assignment.items()))}

    def _load_assignment(self, meta) -> None:
        try:
            self.assignment = {str(t): int(c) for t, c in meta["assignment"].items()}
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            raise StateError(f"saved {self.name!r} state has no valid cluster assignment") from e

    def _load_masks(self, system, tensors) -> dict[int, torch.Tensor]:
        d = system.setting.spec.numel
        packed = tensors.get("masks")
        k = len(self.groups)
        if packed is None or packed.dtype != torch.uint8 or (k and tuple(packed.shape) != (k, (d + 7) // 8)):
            raise StateError(f"saved {self.name!r} masks do not match {k} clusters over d={d}")
        return {c: packed[i].clone() for i, c in enumerate(self.groups)}


class _Masked(Localized):
    """Methods serving M0 + α m_k ⊙ τ̄ from one packed mask per cluster."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.masks: dict[int, torch.Tensor] = {}

    def alpha(self, system) -> float:
        return resolve_alpha(self.params["alpha"], len(system.ledger))

    def mask(self, system, c) -> torch.Tensor:
        return unpack(self.masks[c], system.setting.spec.numel)

    def weights_for(self, system, task_id):
        c = self.assignment.get(str(task_id))
        if c is None:
            return fallback_weights(system)
        return masked_weights(system.setting.theta0, self.mask(system, c), system.tau_bar, self.alpha(system))

    def _packed(self) -> torch.Tensor:
        return torch.stack([self.masks[c] for c in self.groups]) if self.masks else torch.zeros((0, 0), dtype=torch.uint8)

    def storage_bytes(self, system):
        k = len(self.masks)
        return storage_bytes(system.setting.spec.numel, 1, k, self.n_scalars()) + self.extra_vector_bytes(system)

    def n_scalars(self) -> int:
        return 0


@register("tall")
class Tall(_Masked):
    """TALL-masks: m_k = 1{|τ_k| ≥ λ_k |τ̄ − τ_k|}, λ_k from ``lambdas`` by the score on the
    cluster's pooled validation data; served M0 + α m_k ⊙ τ̄ with α = 1.0 by default (TALL on
    the plain sum; "mean" gives 1/T). Refresh needs every remaining τ_t."""

    def __init__(self, clusters=None, cluster_by="task-vectors", vectors="retrain", negative="clip",
                 feature_algorithm="kmeans", alpha=1.0, lambdas=LAMBDA_GRID, cluster_vector="mean"):
        _check_alpha(alpha)
        lambdas = [float(v) for v in lambdas]
        if not lambdas or any(v < 0 for v in lambdas):
            raise ValueError(f"lambdas must be a non-empty list of λ ≥ 0, got {lambdas}")
        super().__init__(clusters=clusters, cluster_by=cluster_by, vectors=vectors, negative=negative,
                         feature_algorithm=feature_algorithm, alpha=alpha, lambdas=lambdas,
                         cluster_vector=cluster_vector)
        self.lambdas: dict[int, float] = {}

    def localize(self, system, vectors, costs):
        setting, tau_bar, alpha = system.setting, system.tau_bar, self.alpha(system)
        self.masks, self.lambdas = {}, {}
        for c, ids in self._bar(system, list(self.groups.items()), "TALL masks"):
            tau_k = self.group_vector(system, ids, vectors)
            xv, yv = self.group_data(system, ids, "val")
            choice = choose_lambda(tau_k, tau_bar, lambda m: setting.score(
                masked_weights(setting.theta0, m, tau_bar, alpha), xv, yv), self.params["lambdas"])
            self.masks[c] = pack_masks([choice.mask])[0]
            self.lambdas[c] = choice.lam

    def n_scalars(self):
        return len(self.lambdas)

    def state(self, system):
        return {"masks": self._packed()}, {**self._meta(), "lambdas": [self.lambdas[c] for c in self.groups]}

    def load_state(self, system, tensors, meta):
        self._load_assignment(meta)
        self.masks = self._load_masks(system, tensors)
        lams = meta.get("lambdas", [])
        if len(lams) != len(self.masks):
            raise StateError("saved TALL state: one λ per cluster expected")
        self.lambdas = {c: float(v) for c, v in zip(self.groups, lams)}


@register("emr")
class Emr(Localized):
    """EMR-merging over the cluster vectors τ_k (task vectors when ``clusters`` is None):
    ε = sign(τ̄) (zeros → −1, from the exact ledger sum), τ_uni, m_k, λ_k as in
    :func:`clamu_helpers.masks.emr`; served M0 + λ_k m_k ⊙ τ_uni (λ_k = 1 if not ``rescale``).
    Storage: τ_uni and τ̄ (kept for exact unlearning), K masks, K rescalers."""

    def __init__(self, clusters=None, cluster_by="task-vectors", vectors="retrain", negative="clip",
                 feature_algorithm="kmeans", rescale=True, cluster_vector="mean"):
        super().__init__(clusters=clusters, cluster_by=cluster_by, vectors=vectors, negative=negative,
                         feature_algorithm=feature_algorithm, rescale=bool(rescale), cluster_vector=cluster_vector)
        self.result: EMRResult | None = None

    def localize(self, system, vectors, costs):
        groups = self.groups
        if not groups:
            self.result = None
            return

        def source():
            for c, ids in self._bar(system, list(groups.items()), "EMR"):
                yield c, self.group_vector(system, ids, vectors)

        self.result = emr(source, elect=system.tau_bar)

    def weights_for(self, system, task_id):
        c = self.assignment.get(str(task_id))
        if c is None or self.result is None:
            return fallback_weights(system)
        return self.result.weights(system.setting.theta0, c, self.params["rescale"])

    def state(self, system):
        if self.result is None:
            return {}, self._meta()
        r = self.result
        cs = list(self.groups)
        return ({"masks": torch.stack([r.masks[c] for c in cs]), "tau_uni": r.tau_uni,
                 "rescalers": torch.tensor([r.rescalers[c] for c in cs], dtype=torch.float64)}, self._meta())

    def load_state(self, system, tensors, meta):
        self._load_assignment(meta)
        if not self.assignment:
            self.result = None
            return
        masks = self._load_masks(system, tensors)
        tau_uni, resc = tensors.get("tau_uni"), tensors.get("rescalers")
        if tau_uni is None or resc is None or resc.numel() != len(masks):
            raise StateError("saved EMR state lacks τ_uni or one rescaler per cluster")
        system.setting.spec.check(tau_uni, "saved τ_uni")
        eps = emr_elect(system.tau_bar)
        self.result = EMRResult(eps, tau_uni.clone(), masks, {c: float(v) for c, v in zip(self.groups, resc.tolist())})

    def storage_bytes(self, system):
        k = len(self.groups)
        return storage_bytes(system.setting.spec.numel, 2, k, k) + self.extra_vector_bytes(system)


@register("clamu")
class Clamu(_Masked):
    """ClAMU optimized masks (draft Algorithm 1 ``Localize``): per cluster, scores s_k from 0,
    m_k = 1{σ(s_k) > 0.5}, ``mask_steps`` (E_mask) straight-through updates of size ``mask_lr``
    on the cluster's training data (``mask_batch_size`` None: full batch; else batches from a
    generator seeded by (system seed, cluster members)), step divided by its mean |·| when
    ``normalize``. Served M0 + α m_k ⊙ τ̄; α = 1.0 by default (the draft's M0 + m ⊙ τ̄), and
    α enters the update by the chain rule (see :func:`clamu_helpers.masks.ste_score_step`).
    Every refresh re-optimizes all K masks from s = 0 on the new τ̄ (K·E_mask gradient steps,
    E_mask parallel steps; the same is counted at fit). Only task-vector clusters need the
    remaining τ_t after unlearning."""

    def __init__(self, clusters=None, cluster_by="task-vectors", vectors="retrain", negative="clip",
                 feature_algorithm="kmeans", alpha=1.0, mask_steps=200, mask_lr=0.01, mask_batch_size=None,
                 normalize=True):
        _check_alpha(alpha)
        MaskConfig(int(mask_steps), float(mask_lr), mask_batch_size)  # validates
        super().__init__(clusters=clusters, cluster_by=cluster_by, vectors=vectors, negative=negative,
                         feature_algorithm=feature_algorithm, alpha=alpha, mask_steps=int(mask_steps),
                         mask_lr=float(mask_lr), mask_batch_size=mask_batch_size, normalize=bool(normalize))

    def needs_vectors(self):
        return self.clusters_need_vectors()

    def mask_config(self, system) -> MaskConfig:
        p = self.params
        return MaskConfig(p["mask_steps"], p["mask_lr"], p["mask_batch_size"], self.alpha(system), p["normalize"],
                          system.setting.finetune_config.threads)

    def localize(self, system, vectors, costs):
        cfg, tau_bar = self.mask_config(system), system.tau_bar
        self.masks = {}
        groups = list(self.groups.items())
        for c, ids in self._bar(system, groups, "ClAMU masks"):
            data = self.group_data(system, ids, "train")
            g = generator(system.seed, "clamu-mask", *ids)
            m, _ = optimize_mask(system.setting, tau_bar, data, cfg, g)
            self.masks[c] = pack_masks([m])[0]
        if groups:
            costs.add(gradient_steps=len(groups) * cfg.steps, parallel_steps=cfg.steps)

    def state(self, system):
        return {"masks": self._packed()}, self._meta()

    def load_state(self, system, tensors, meta):
        self._load_assignment(meta)
        self.masks = self._load_masks(system, tensors) if self.assignment else {}


@register("cluster-merge")
class ClusterMerge(Localized):
    """Per-cluster merged models (draft Figure 4): τ̄_k = Σ_{t∈k} τ_t kept exactly in one
    :class:`MergeLedger` per cluster, served M0 + α τ̄_k with α = 1/|k| by default ("mean";
    a number is used as is). Storage: K float32 models (τ̄ = Σ_k τ̄_k needs no extra copy).

    Refresh re-clusters; a cluster whose members did not change keeps its ledger; one that only
    lost forgotten tasks either subtracts them (retraining them, when fewer than its remaining
    members) or is rebuilt from its members' τ_t; any other cluster is rebuilt. With
    ``vectors="keep"`` rebuilding uses the kept τ_t and trains nothing."""

    def __init__(self, clusters=None, cluster_by="task-vectors", vectors="retrain", negative="clip",
                 feature_algorithm="kmeans", alpha="mean"):
        _check_alpha(alpha)
        super().__init__(clusters=clusters, cluster_by=cluster_by, vectors=vectors, negative=negative,
                         feature_algorithm=feature_algorithm, alpha=alpha)
        self.ledgers: dict[int, MergeLedger] = {}

    def _new_ledger(self, system) -> MergeLedger:
        return MergeLedger(system.setting.spec, system.ledger.scale_bits, system.ledger.max_tasks)

    def localize(self, system, vectors, costs):
        self.ledgers = {}
        for c, ids in self._bar(system, list(self.groups.items()), "cluster merges"):
            led = self._new_ledger(system)
            led.add_many((t, vectors[t]) for t in ids)
            self.ledgers[c] = led

    def refresh(self, system, removed):
        removed = set(removed)
        old = {frozenset(ids): self.ledgers[c] for c, ids in self.groups.items()}
        vecs = self.remaining_vectors(system, system.task_ids) if self.clusters_need_vectors() else None
        assignment = self.cluster(system, vecs)
        new_groups = members(assignment)
        shrunk = {frozenset(o - removed): o for o in old}
        plan, need = {}, set()
        keep_mode = self.params["vectors"] == "keep"
        for c, ids in new_groups.items():
            s = frozenset(ids)
            o = shrunk.get(s)
            if o is not None and o == s:
                plan[c] = ("reuse", o)
            elif o is not None and vecs is None and not keep_mode and len(o - s) < len(s):
                plan[c] = ("subtract", o)
                need |= o - s
            else:
                plan[c] = ("rebuild", None)
                if vecs is None:
                    need |= s
        if vecs is None and need:
            if keep_mode:
                vecs = {t: system.vectors[t] for t in need}
            else:
                vecs = {t: system.retrained[t] for t in need if t in system.retrained}  # verified this request
                rest = sorted(need - set(vecs))
                if rest:
                    vecs.update(system.finetune(rest, use_store=False, desc="retrain for cluster merges"))
                    system.unlearn_costs.add(len(rest), len(rest) * system.steps, system.steps)
        ledgers = {}
        for c, (how, o) in plan.items():
            if how == "reuse":
                ledgers[c] = old[o]
            elif how == "subtract":
                led = MergeLedger.from_state(*old[o].state())
                led.remove_many((t, vecs[t]) for t in sorted(o - frozenset(new_groups[c])))  # hash-checked
                ledgers[c] = led
            else:
                led = self._new_ledger(system)
                for t in new_groups[c]:
                    if t not in vecs:
                        raise StateError(f"no task vector for {t!r} to rebuild its cluster")
                    if vecs[t].sha256 != system.ledger.hashes.get(t):
                        raise ExactnessError(f"task vector of {t!r} differs from the one merged")
                led.add_many((t, vecs[t]) for t in new_groups[c])
                ledgers[c] = led
        self.assignment, self.ledgers = assignment, ledgers

    def alpha(self, c) -> float:
        return resolve_alpha(self.params["alpha"], len(self.ledgers[c]))

    def weights_for(self, system, task_id):
        c = self.assignment.get(str(task_id))
        if c is None:
            return fallback_weights(system)
        return system.setting.theta0 + self.alpha(c) * self.ledgers[c].tau_bar()

    def state(self, system):
        tensors, clusters = {}, []
        for c in self.groups:
            t, meta = self.ledgers[c].state()
            tensors[f"cluster_sum/{c}"] = t["ledger_sum"]
            clusters.append(meta["hashes"])
        return tensors, {**self._meta(), "cluster_hashes": clusters}

    def state_digest(self, system):
        """Like :meth:`Method.state_digest`, hashing each cluster ledger's digest (no copies)."""
        h = hashlib.sha256(json.dumps({"method": self.name, "params": self.params, "meta": self._meta()},
                                      sort_keys=True, default=str).encode())
        for c in self.groups:
            h.update(f"{c}:{self.ledgers[c].digest()}".encode())
        return h.hexdigest()

    def load_state(self, system, tensors, meta):
        self._load_assignment(meta)
        hashes = meta.get("cluster_hashes", [])
        if len(hashes) != len(self.groups):
            raise StateError("saved cluster-merge state: one hash record per cluster expected")
        led0 = system.ledger
        self.ledgers = {}
        for (c, ids), hs in zip(self.groups.items(), hashes):
            if sorted(hs) != list(ids) or f"cluster_sum/{c}" not in tensors:
                raise StateError(f"saved cluster-merge state: cluster {c} does not match its members")
            try:
                self.ledgers[c] = MergeLedger.from_state(
                    {"ledger_sum": tensors[f"cluster_sum/{c}"]},
                    {"spec": system.setting.spec.to_json(), "scale_bits": led0.scale_bits,
                     "max_tasks": led0.max_tasks, "hashes": hs})
            except ShapeMismatchError as e:
                raise StateError(f"saved cluster-merge state: {e}") from e

    def storage_bytes(self, system):
        return storage_bytes(system.setting.spec.numel, max(1, len(self.ledgers))) + self.extra_vector_bytes(system)


__all__ = ["Clamu", "ClusterMerge", "Emr", "Localized", "Tall", "fallback_weights"]
