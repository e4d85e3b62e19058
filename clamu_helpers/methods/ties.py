"""``ties``: TIES-merging (Yadav et al. 2023) as a system method, k and λ chosen on validation data."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import StateError
from ..core.merging import ties_merge
from .base import Params, register
from .basic import mean_val_score
from .declared import VAL, Grid, Real, param
from .remaining import UsesRemainingVectors, vectors_param

#: the trim fractions and scales searched when ``k`` / ``lam`` are ``"val"``: TIES's own k = 20%
#: with 10% and 30% beside it; λ scales a disjoint *mean* (one task vector's magnitude), so its
#: grid spans the TALL code's search range (0.1–1) and the TIES paper's (around 1–2)
K_GRID = (0.1, 0.2, 0.3)
LAMBDA_GRID = (0.1, 0.3, 0.5, 1.0, 1.5, 2.0)


@register("ties")
class Ties(UsesRemainingVectors):
    """Every task is served M0 + λ τ_TIES, τ_TIES = :func:`clamu_helpers.core.merging.ties_merge` of
    the merged τ_t (sorted by id) with trim fraction k. ``k`` and ``lam`` are numbers or ``"val"``
    (the whole grid ``ks`` × ``lams`` is scored by the mean validation score over the merged
    tasks). TIES needs every τ_t: a refresh retrains the remaining ones (``vectors="retrain"``)
    or reads them from the system (``"keep"``, T·d·4 extra bytes). Storage: one model."""

    reference = "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023"
    scale_param = "lam"

    @dataclass
    class Params(Params):
        k: float | str = param(VAL, Real(high=1, closed="right", cast=True), sentinels=(VAL,), grid="ks")   # trim fraction
        lam: float | str = param(VAL, Real(cast=True), sentinels=(VAL,), grid="lams")   # the served scale λ
        ks: list = param(list(K_GRID), Grid(Real(high=1, closed="right", cast=True)))
        lams: list = param(list(LAMBDA_GRID), Grid())
        vectors: str = vectors_param()   # how a refresh gets every τ_t: "retrain" or "keep"

    def __init__(self, **params):
        super().__init__(**params)
        self.merged: torch.Tensor | None = None

    def fit(self, ctx, vectors):
        self._build(ctx, vectors)

    def refresh(self, ctx, removed, retrained):
        self._build(ctx, self.remaining_vectors(ctx, ctx.task_ids))

    def _build(self, ctx, vectors) -> None:
        ids = sorted(ctx.task_ids)
        self.chosen = {}
        if not ids:
            self.merged = None
            return
        n = len(ctx.ledger)
        merged = {k: ties_merge(lambda: ((t, vectors[t].values) for t in ids), k) for k in self.grid("k", n)}
        theta0 = ctx.setting.theta0
        self.chosen = self.search(ctx, ("k", "lam"), lambda v: mean_val_score(
            ctx, theta0 + v["lam"] * merged[v["k"]], ids))
        self.merged = merged[self.chosen_value("k")]

    def weights_for(self, ctx, task_id):
        if self.merged is None:
            return ctx.setting.theta0
        return ctx.setting.theta0 + self.chosen_value("lam") * self.merged

    def state(self, ctx):
        if self.merged is None:
            return {}, {}
        return {"ties": self.merged}, ({"chosen": dict(self.chosen)} if self.chosen else {})

    def load_state(self, ctx, tensors, meta):
        self.merged = tensors.get("ties")
        if len(ctx.ledger) and self.merged is None:
            raise StateError("saved TIES state lacks its merged vector")
        if self.merged is not None:
            ctx.setting.spec.check(self.merged, "saved TIES vector")
        super().load_state(ctx, tensors, meta)   # the choices made on validation data

    def storage_bytes(self, ctx):
        d = ctx.setting.spec.numel
        return 4 * d + self.extra_vector_bytes(ctx)
