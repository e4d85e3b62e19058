"""``consensus``: Consensus merging (Wang et al. 2024, the TALL paper), k and α chosen on validation data."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import StateError
from ..localization.masks import masked_weights, storage_bytes, tall_masks
from ..core.packing import pack, unpack
from .base import Params, register
from .basic import mean_val_score
from .declared import SCALE_GRID, VAL, Grid, Integer, Real, param
from .remaining import UsesRemainingVectors, vectors_param

#: agreement thresholds searched when ``k="val"``: k = 2 is the paper's default (drop "selfish"
#: weights that only one task uses, and "catastrophic" ones no task uses); 1 keeps every weight
#: some task uses, 3 asks for more agreement
K_GRID = (1, 2, 3)


@register("consensus")
class Consensus(UsesRemainingVectors):
    """Consensus merging: every task is served the one model M0 + α m ⊙ τ̄ with the consensus
    mask m = 1{Σ_t m_t ≥ k}, where m_t = 1{|τ_t| > λ|τ̄ − τ_t|} are the TALL masks of the merged
    tasks (:func:`clamu_helpers.localization.masks.tall_masks`, one λ for all tasks). ``k`` (an integer ≥ 1 or
    ``"val"``: from ``ks``) and ``alpha`` (a number or ``"val"``: from
    :func:`~clamu_helpers.localization.selection.scale_grid`) are chosen together by the mean validation score
    over the merged tasks. ``lam`` is fixed (default 0.4, the middle of the TALL λ grid: our
    choice, a parameter) so that the search stays |ks| × |α| evaluations.

    The mask depends on τ̄, so after unlearning every remaining τ_t is needed again: retrained
    (``vectors="retrain"``: a second round of finetunes, like TALL) or kept (``"keep"``: T·d·4
    extra bytes). Storage: τ̄ (one model) and the mask (1 bit per parameter)."""

    reference = ("Wang et al., Localizing Task Information for Improved Model Merging and Compression, ICML 2024 "
                 "(Consensus Merging; nik-dim/tall_masks)")
    scale_param = "alpha"

    @dataclass
    class Params(Params):
        k: int | str = param(VAL, Integer(), sentinels=(VAL,), grid="ks")   # how many TALL masks must agree
        alpha: float | str = param(VAL, Real(cast=True), sentinels=(VAL,), grid=SCALE_GRID)   # the served scale
        lam: float = param(0.4, Real(cast=True))       # λ of the task masks m_t (a threshold, not a scale)
        ks: list = param(list(K_GRID), Grid(Integer()))
        vectors: str = vectors_param()   # how a refresh gets every τ_t: "retrain" or "keep"

    def __init__(self, **params):
        super().__init__(**params)
        self.mask: torch.Tensor | None = None  # packed m, 1 bit per parameter

    # -- life cycle ------------------------------------------------------------------------------
    def fit(self, ctx, vectors):
        self._build(ctx, vectors)

    def refresh(self, ctx, removed, retrained):
        self._build(ctx, self.remaining_vectors(ctx, ctx.task_ids))

    def agreement(self, ctx, vectors) -> torch.Tensor:
        """Σ_t m_t over the merged tasks (int32 per parameter), sorted by task id."""
        tau_bar, count = ctx.tau_bar, None
        for t in sorted(ctx.task_ids):
            m = tall_masks(vectors[t].values, tau_bar, self.p.lam).to(torch.int32)
            count = m if count is None else count.add_(m)
        return count

    def _build(self, ctx, vectors) -> None:
        ids = sorted(ctx.task_ids)
        self.mask, self.chosen = None, {}
        if not ids:
            return
        count = self.agreement(ctx, vectors)
        masks = {k: count >= k for k in self.grid("k", len(ids))}
        theta0, tau_bar = ctx.theta0, ctx.tau_bar
        self.chosen = self.search(ctx, ("k", "alpha"), lambda v: mean_val_score(
            ctx, masked_weights(theta0, masks[v["k"]], tau_bar, v["alpha"]), ids))
        self.mask = pack(masks[self.chosen_value("k")])

    # -- what is served --------------------------------------------------------------------------
    def weights_for(self, ctx, task_id):
        if self.mask is None:
            return ctx.theta0
        return masked_weights(ctx.theta0, unpack(self.mask, ctx.setting.spec.numel), ctx.tau_bar,
                              float(self.chosen_value("alpha")))

    def mask_density(self, ctx):
        if self.mask is None:
            return None
        return float(unpack(self.mask, ctx.setting.spec.numel).float().mean())

    def state(self, ctx):
        if self.mask is None:
            return {}, {}
        return {"mask": self.mask}, {"chosen": dict(self.chosen)}

    def load_state(self, ctx, tensors, meta):
        self.mask = tensors.get("mask")
        if len(ctx.ledger) and self.mask is None:
            raise StateError("saved consensus state lacks its mask")
        if self.mask is not None and (self.mask.dtype != torch.uint8
                                      or self.mask.numel() != (ctx.setting.spec.numel + 7) // 8):
            raise StateError("saved consensus mask has the wrong size or type for this spec")
        super().load_state(ctx, tensors, meta)   # the choices made on validation data

    def storage_bytes(self, ctx):
        d = ctx.setting.spec.numel
        return storage_bytes(d, 1, 1) + self.extra_vector_bytes(ctx)
