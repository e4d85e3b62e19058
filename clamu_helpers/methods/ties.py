"""``ties``: TIES-merging (Yadav et al. 2023) as a system method, k and λ chosen on validation data."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ..costs import Costs
from ..errors import StateError
from ..merging import ties_merge
from ..selection import check_grid, choose, is_val
from .base import Method, Params, register
from .basic import mean_val_score
from .localized import VECTORS, remaining_vectors

#: the trim fractions and scales searched when ``k`` / ``lam`` are ``"val"``: TIES's own k = 20%
#: with 10% and 30% beside it; λ scales a disjoint *mean* (one task vector's magnitude), so its
#: grid spans the TALL code's search range (0.1–1) and the TIES paper's (around 1–2)
K_GRID = (0.1, 0.2, 0.3)
LAMBDA_GRID = (0.1, 0.3, 0.5, 1.0, 1.5, 2.0)


@register("ties")
class Ties(Method):
    """Every task is served M0 + λ τ_TIES, τ_TIES = :func:`clamu_helpers.merging.ties_merge` of
    the merged τ_t (sorted by id) with trim fraction k. ``k`` and ``lam`` are numbers or ``"val"``
    (the whole grid ``ks`` × ``lams`` is scored by the mean validation score over the merged
    tasks). TIES needs every τ_t: a refresh retrains the remaining ones (``vectors="retrain"``)
    or reads them from the system (``"keep"``, T·d·4 extra bytes). Storage: one model."""

    reference = "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023"
    scale_param = "lam"
    cost_rule = "retrain-all"

    @dataclass
    class Params(Params):
        k: float | str = "val"        # the trim fraction in (0, 1], or "val" (from ks)
        lam: float | str = "val"      # λ, a positive number, or "val" (from lams)
        ks: list = field(default_factory=lambda: list(K_GRID))
        lams: list = field(default_factory=lambda: list(LAMBDA_GRID))
        vectors: str = "retrain"      # how a refresh gets every τ_t: "retrain" or "keep"

        def validate(self):
            if not is_val(self.k):
                if isinstance(self.k, bool) or not isinstance(self.k, (int, float)) or not 0 < float(self.k) <= 1:
                    raise ValueError(f"k (the TIES trim fraction) must be in (0, 1] or 'val', got {self.k!r}")
                self.k = float(self.k)
            if not is_val(self.lam):
                self.lam = check_grid([self.lam], "lam (TIES's λ, a positive number or 'val')")[0]
            self.ks = list(check_grid(self.ks, "ks"))
            if any(v > 1 for v in self.ks):
                raise ValueError(f"ks must lie in (0, 1], got {self.ks}")
            self.lams = list(check_grid(self.lams, "lams"))
            if self.vectors not in VECTORS:
                raise ValueError(f"vectors must be one of {VECTORS}, got {self.vectors!r}")

    def __init__(self, **params):
        super().__init__(**params)
        self.keeps_vectors = self.p.vectors == "keep"
        self.merged: torch.Tensor | None = None
        self.chosen: dict = {}

    def fit(self, ctx, vectors):
        self._build(ctx, vectors)

    def refresh(self, ctx, removed, retrained):
        self._build(ctx, remaining_vectors(ctx, ctx.task_ids, self.params["vectors"], self.name))

    def _build(self, ctx, vectors) -> None:
        ids = sorted(ctx.task_ids)
        self.chosen = {}
        if not ids:
            self.merged = None
            return
        p = self.params
        ks = p["ks"] if is_val(p["k"]) else [p["k"]]
        lams = p["lams"] if is_val(p["lam"]) else [p["lam"]]
        merged = {k: ties_merge(lambda: ((t, vectors[t].values) for t in ids), k) for k in ks}
        theta0 = ctx.setting.theta0
        best = choose(list(itertools.product(ks, lams)),
                      lambda kl: mean_val_score(ctx, theta0 + kl[1] * merged[kl[0]], ids)).value \
            if len(ks) * len(lams) > 1 else (ks[0], lams[0])
        self.merged = merged[best[0]]
        self.chosen = {name: v for name, v in zip(("k", "lam"), best) if is_val(p[name])}

    def resolved(self) -> tuple[float, float]:
        return self.chosen_value("k"), self.chosen_value("lam")

    def weights_for(self, ctx, task_id):
        if self.merged is None:
            return ctx.setting.theta0
        return ctx.setting.theta0 + self.resolved()[1] * self.merged

    def served_params(self, ctx):
        if self.merged is None:
            return {}
        k, lam = self.resolved()
        return {"k": k, "lam": lam}

    def state(self, ctx):
        if self.merged is None:
            return {}, {}
        return {"ties": self.merged}, ({"chosen": dict(self.chosen)} if self.chosen else {})

    def load_state(self, ctx, tensors, meta):
        self.chosen = dict(meta.get("chosen", {}))
        self.merged = tensors.get("ties")
        if len(ctx.ledger) and self.merged is None:
            raise StateError("saved TIES state lacks its merged vector")
        if self.merged is not None:
            ctx.setting.spec.check(self.merged, "saved TIES vector")
        if self.merged is not None:
            self.require_chosen(("k", "lam"), "TIES")

    def storage_bytes(self, ctx):
        d = ctx.setting.spec.numel
        return 4 * d + (4 * d * len(ctx.vectors) if self.keeps_vectors else 0)

    def unlearning_cost(self, n_before, n_forgotten, steps):
        c = Costs().round(n_forgotten, steps)
        if self.params["vectors"] == "retrain":
            c.round(n_before - n_forgotten, steps)
        return c
