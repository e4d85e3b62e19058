"""``tall``: TALL-masks (Wang et al. 2024), per task or per cluster."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import StateError
from ..localization.masks import LAMBDA_GRID, choose_lambda, masked_weights, pack_masks, tall_masks
from .base import register
from .declared import Grid, Options, param
from .localized import CLUSTER_VECTOR, Masked, weighted_mean


@register("tall")
class Tall(Masked):
    """TALL-masks: m_k = 1{|τ_k| > λ_k |τ̄ − τ_k|} (the original code's strict test), λ_k from
    ``lambdas`` by the score on the cluster's pooled validation data; served M0 + α m_k ⊙ τ̄.

    The original serves the plain sum (α = 1). ``alpha="val"`` (default) chooses α from
    :func:`clamu_helpers.localization.selection.scale_grid` (which holds 1) by the mean validation score, with
    λ_k re-chosen for each α, as every method's served scale is chosen here. With clusters the
    local vector τ_k is the cluster's sum (``cluster_vector="sum"``): its share of τ̄ on τ̄'s own
    scale, so the test compares the cluster against the rest of τ̄ exactly as a task's τ_t is
    compared against the others (the cluster mean would be |k| times too small to pass it).
    Refresh needs every remaining τ_t."""

    reference = ("Wang et al., Localizing Task Information for Improved Model Merging and Compression, ICML 2024 "
                 "(nik-dim/tall_masks)")

    @dataclass
    class Params(Masked.Params):
        lambdas: list = param(list(LAMBDA_GRID), Grid())   # λ grid, chosen per cluster on val
        cluster_vector: str = param("sum", Options(*CLUSTER_VECTOR))   # τ_k of a cluster: "sum" or "mean"

    def __init__(self, **params):
        super().__init__(**params)
        self.lambdas: dict[int, float] = {}

    def localize(self, ctx, vectors, costs):
        setting, tau_bar = ctx.setting, ctx.tau_bar
        self.masks, self.lambdas, self.chosen = {}, {}, {}
        if not self.groups:
            return
        alphas = self.grid("alpha", len(ctx.ledger))
        # first pass: per α only each cluster's λ and its score (holding each candidate α's masks
        # would be O(|α|·T·d/8), growing with T); the chosen α's masks are rebuilt in a second pass,
        # unless α is fixed (one candidate): then its masks are the state and are kept as they come
        per_alpha = {al: ({}, []) for al in alphas}  # α → (λs, [(val score, |k|)])
        kept = {} if len(alphas) == 1 else None
        for c, ids in self._bar(ctx, list(self.groups.items()), "TALL masks"):
            tau_k = self.group_vector(ctx, ids, vectors)
            xv, yv = self.group_data(ctx, ids, "val")
            for al in alphas:
                ch = choose_lambda(tau_k, tau_bar, lambda m: setting.score(
                    masked_weights(setting.theta0, m, tau_bar, al), xv, yv), self.p.lambdas)
                lams, scores = per_alpha[al]
                lams[c] = ch.lam
                scores.append((ch.scores[ch.lam], len(ids)))
                if kept is not None:
                    kept[c] = pack_masks([ch.mask])[0]
        # α by the clusters' validation scores (each cluster at its own best λ for that α)
        self.chosen = self.search(ctx, ["alpha"], lambda v: weighted_mean(per_alpha[v["alpha"]][1]))
        self.lambdas = per_alpha[self.chosen.get("alpha", alphas[0])][0]
        # second pass: m_k = 1{|τ_k| > λ_k |τ̄ − τ_k|} at the chosen λ_k (the same bits choose_lambda scored)
        self.masks = kept if kept is not None else {
            c: pack_masks([tall_masks(self.group_vector(ctx, ids, vectors), tau_bar, self.lambdas[c])])[0]
            for c, ids in self.groups.items()}

    def n_scalars(self):
        return len(self.lambdas)

    def state(self, ctx):
        return {"masks": self._packed()}, {**self._meta(), "lambdas": [self.lambdas[c] for c in self.groups]}

    def load_state(self, ctx, tensors, meta):
        self._load_assignment(meta)
        self.masks = self._load_masks(ctx, tensors)
        self._load_chosen(meta)
        lams = meta.get("lambdas", [])
        if len(lams) != len(self.masks):
            raise StateError("saved TALL state: one λ per cluster expected")
        self.lambdas = {c: float(v) for c, v in zip(self.groups, lams)}
