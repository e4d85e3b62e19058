"""``emr``: EMR-merging (Huang et al. 2024), per task or per cluster."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import StateError
from ..localization.emr_merging import RESCALERS, EMRResult, emr, emr_elect
from ..localization.masks import storage_bytes
from .base import register
from .declared import Flag, Options, param
from .localized import CLUSTER_VECTOR, Localized, fallback_weights


@register("emr")
class Emr(Localized):
    """EMR-merging over the vectors it merges: the task vectors τ_t (``clusters`` None) or the
    cluster vectors (τ_k/|k| by default: each cluster's merged model, draft Sec. 4.3). The sign
    ε is elected from exactly those vectors (per task: the exact ledger τ̄; with clusters: the
    sum of the cluster vectors), then τ_uni, m_k and λ_k as :func:`clamu_helpers.localization.emr_merging.emr`
    computes them: per-parameter-tensor rescalers as the original code does
    (``rescaler="per-tensor"``), or the global-sum form (``"global"``); λ_k = 1 if not
    ``rescale``. Served M0 + λ_k m_k ⊙ τ_uni. Storage: τ_uni and τ̄ (kept for exact unlearning),
    K masks, K rescalers. Refresh needs every remaining τ_t."""

    reference = ("Huang et al., EMR-Merging: Tuning-Free High-Performance Model Merging, NeurIPS 2024 "
                 "(harveyhuang18/EMR_Merging)")

    @dataclass
    class Params(Localized.Params):
        rescale: bool = param(True, Flag())    # serve λ_k m_k ⊙ τ_uni (False: λ_k = 1)
        rescaler: str = param("per-tensor", Options(*RESCALERS))   # "per-tensor" (the original code) or "global"
        cluster_vector: str = param("mean", Options(*CLUSTER_VECTOR))   # τ_k of a cluster: "mean" or "sum"

    def __init__(self, **params):
        super().__init__(**params)
        self.result: EMRResult | None = None

    def localize(self, ctx, vectors, costs):
        groups = self.groups
        if not groups:
            self.result = None
            return

        def source():
            for c, ids in self._bar(ctx, list(groups.items()), "EMR"):
                yield c, self.group_vector(ctx, ids, vectors)

        elect = ctx.tau_bar if self.p.clusters is None else None
        self.result = emr(source, elect=elect, segments=ctx.setting.spec.sizes, rescaler=self.p.rescaler)

    def weights_for(self, ctx, task_id):
        c = self.assignment.get(str(task_id))
        if c is None or self.result is None:
            return fallback_weights(ctx)
        return self.result.weights(ctx.setting.theta0, c, self.p.rescale)

    def mask_density(self, ctx):
        if self.result is None:
            return None
        return float(sum(int(self.result.mask(c).sum()) for c in self.result.masks)
                     / (self.result.tau_uni.numel() * len(self.result.masks)))

    def served_params(self, ctx):
        if self.result is None:
            return {}
        lams = list(self.result.rescalers.values())
        return {"rescaler_mean": sum(lams) / len(lams)} if self.p.rescale else {}

    def state(self, ctx):
        if self.result is None:
            return {}, self._meta()
        r = self.result
        cs = list(self.groups)
        return ({"masks": torch.stack([r.masks[c] for c in cs]), "tau_uni": r.tau_uni,
                 "rescalers": torch.tensor([r.rescalers[c] for c in cs], dtype=torch.float64, device="cpu")}, self._meta())

    def load_state(self, ctx, tensors, meta):
        self._load_assignment(meta)
        if not self.assignment:
            self.result = None
            return
        masks = self._load_masks(ctx, tensors)
        tau_uni, resc = tensors.get("tau_uni"), tensors.get("rescalers")
        if tau_uni is None or resc is None or resc.numel() != len(masks):
            raise StateError("saved EMR state lacks τ_uni or one rescaler per cluster")
        ctx.setting.spec.check(tau_uni, "saved τ_uni")
        # ε itself is not served: where τ_uni ≠ 0 it is sign(τ_uni); elsewhere no mask selects anything
        self.result = EMRResult(emr_elect(tau_uni), tau_uni.clone(), masks,
                                {c: float(v) for c, v in zip(self.groups, resc.tolist())})

    def storage_bytes(self, ctx):
        k = len(self.groups)
        return storage_bytes(ctx.setting.spec.numel, 2, k, k) + self.extra_vector_bytes(ctx)
