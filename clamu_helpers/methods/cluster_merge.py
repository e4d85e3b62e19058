"""``cluster-merge``: one merged model per cluster (draft, Figure 4)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
import json

from ..core.errors import ShapeMismatchError, StateError
from ..core.ledger import MergeLedger
from ..localization.masks import storage_bytes
from ..localization.clustering import members
from .base import Method, register
from .declared import ONE_OVER_T, Real, param
from .localized import Localized, add_in_chunks, fallback_weights


@register("cluster-merge")
class ClusterMerge(Localized):
    """Per-cluster merged models (draft Figure 4): τ̄_k = Σ_{t∈k} τ_t kept exactly in one
    :class:`MergeLedger` per cluster, served M0 + α τ̄_k with α = 1/|k| by default ("mean";
    a number is used as is). Storage: K float32 models (τ̄ = Σ_k τ̄_k needs no extra copy).

    Refresh re-clusters; a cluster whose members did not change keeps its ledger; one that only
    lost forgotten tasks either subtracts them (retraining them, when fewer than its remaining
    members) or is rebuilt from its members' τ_t; any other cluster is rebuilt. With
    ``vectors="keep"`` rebuilding uses the kept τ_t and trains nothing."""

    reference = "the draft, Sec. 4.1 and Figure 4: one merged model per cluster"
    scale_param = None
    cost_rule = "retrain-one"
    cost_rule_exact = False

    @dataclass
    class Params(Localized.Params):
        # "1/T" (1/|k|; "mean" is its older spelling) or a positive number; no "val": clusters differ in size
        alpha: float | str = param("mean", Real(), sentinels=(ONE_OVER_T,))

    def __init__(self, **params):
        super().__init__(**params)
        self.ledgers: dict[int, MergeLedger] = {}

    def unlearning_cost(self, n_before, n_forgotten, steps):
        """The draft's counting: retrain τ_u and subtract it from its cluster's ledger (task-vector
        clusters first retrain the T − n others to re-cluster). Re-clustering can move other tasks
        between clusters (random clusters re-deal all of them); a changed cluster is rebuilt from
        its members' τ_t, retrained and charged when that happens, so what the system measures
        can exceed this count (``cost_rule_exact = False``)."""
        c = Method.unlearning_cost(self, n_before, n_forgotten, steps)
        if self.clusters_need_vectors() and self.p.vectors == "retrain":
            c.round(n_before - n_forgotten, steps)
        return c

    def _new_ledger(self, ctx) -> MergeLedger:
        return ctx.ledger.empty_like()

    def localize(self, ctx, vectors, costs):
        self.ledgers = {}
        for c, ids in self._bar(ctx, list(self.groups.items()), "cluster merges"):
            led = self._new_ledger(ctx)
            add_in_chunks(led, ids, vectors)
            self.ledgers[c] = led

    def refresh(self, ctx, removed, retrained):
        removed = set(removed)
        old = {frozenset(ids): self.ledgers[c] for c, ids in self.groups.items()}
        vecs = self.remaining_vectors(ctx, ctx.task_ids) if self.clusters_need_vectors() else None
        assignment = self.cluster(ctx, vecs)
        new_groups = members(assignment)
        shrunk = {frozenset(o - removed): o for o in old}
        plan, need = {}, set()
        keep_mode = self.p.vectors == "keep"
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
                vecs = {t: ctx.vectors[t] for t in need}
            else:
                vecs = {t: retrained[t] for t in need if t in retrained}  # verified this request
                rest = sorted(need - set(vecs))
                if rest:
                    vecs.update(ctx.retrain(rest, desc="retrain for cluster merges"))
        ledgers = {}
        for c, (how, o) in plan.items():
            if how == "reuse":
                ledgers[c] = old[o]
            elif how == "subtract":
                led = MergeLedger.from_state(*old[o].state())
                led.remove_many((t, vecs[t]) for t in sorted(o - frozenset(new_groups[c])))  # hash-checked
                ledgers[c] = led
            else:
                led = self._new_ledger(ctx)
                missing = [t for t in new_groups[c] if t not in vecs]
                if missing:
                    raise StateError(f"no task vector for {missing[:5]} to rebuild their cluster")
                ctx.ledger.check_hashes({t: vecs[t] for t in new_groups[c]}, "kept task vectors")
                led.add_many((t, vecs[t]) for t in new_groups[c])
                ledgers[c] = led
        self.assignment, self.ledgers = assignment, ledgers

    def alpha(self, c) -> float:
        return self.resolve("alpha", len(self.ledgers[c]))

    def weights_for(self, ctx, task_id):
        c = self.assignment.get(str(task_id))
        if c is None:
            return fallback_weights(ctx)
        return ctx.setting.theta0 + self.alpha(c) * self.ledgers[c].tau_bar()

    def state(self, ctx):
        tensors, clusters = {}, []
        for c in self.groups:
            t, meta = self.ledgers[c].state()
            tensors[f"cluster_sum/{c}"] = t["ledger_sum"]
            clusters.append(meta["hashes"])
        return tensors, {**self._meta(), "cluster_hashes": clusters}

    def state_digest(self, ctx):
        """Like :meth:`Method.state_digest`, hashing each cluster ledger's digest (no copies)."""
        h = hashlib.sha256(json.dumps({"method": self.name, "params": self.params, "meta": self._meta()},
                                      sort_keys=True, default=str).encode())
        for c in self.groups:
            h.update(f"{c}:{self.ledgers[c].digest()}".encode())
        return h.hexdigest()

    def load_state(self, ctx, tensors, meta):
        self._load_assignment(meta)
        hashes = meta.get("cluster_hashes", [])
        if len(hashes) != len(self.groups):
            raise StateError("saved cluster-merge state: one hash record per cluster expected")
        led0 = ctx.ledger
        self.ledgers = {}
        for (c, ids), hs in zip(self.groups.items(), hashes):
            if sorted(hs) != list(ids) or f"cluster_sum/{c}" not in tensors:
                raise StateError(f"saved cluster-merge state: cluster {c} does not match its members")
            try:
                self.ledgers[c] = MergeLedger.from_state(
                    {"ledger_sum": tensors[f"cluster_sum/{c}"]},
                    {"spec": ctx.setting.spec.to_json(), "scale_bits": led0.scale_bits,
                     "max_tasks": led0.max_tasks, "digest": led0.digest_format, "hashes": hs})
            except ShapeMismatchError as e:
                raise StateError(f"saved cluster-merge state: {e}") from e

    def storage_bytes(self, ctx):
        return storage_bytes(ctx.setting.spec.numel, max(1, len(self.ledgers))) + self.extra_vector_bytes(ctx)
