"""``consensus``: Consensus merging (Wang et al. 2024, the TALL paper), k and α chosen on validation data."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ..costs import Costs
from ..errors import StateError
from ..masks import masked_weights, storage_bytes, tall_masks
from ..packing import pack, unpack
from ..selection import check_grid, choose, is_val, scale_grid
from .base import Method, Params, register
from .basic import mean_val_score
from .localized import VECTORS, remaining_vectors

#: agreement thresholds searched when ``k="val"``: k = 2 is the paper's default (drop "selfish"
#: weights that only one task uses, and "catastrophic" ones no task uses); 1 keeps every weight
#: some task uses, 3 asks for more agreement
K_GRID = (1, 2, 3)


@register("consensus")
class Consensus(Method):
    """Consensus merging: every task is served the one model M0 + α m ⊙ τ̄ with the consensus
    mask m = 1{Σ_t m_t ≥ k}, where m_t = 1{|τ_t| > λ|τ̄ − τ_t|} are the TALL masks of the merged
    tasks (:func:`clamu_helpers.masks.tall_masks`, one λ for all tasks). ``k`` (an integer ≥ 1 or
    ``"val"``: from ``ks``) and ``alpha`` (a number or ``"val"``: from
    :func:`~clamu_helpers.selection.scale_grid`) are chosen together by the mean validation score
    over the merged tasks. ``lam`` is fixed (default 0.4, the middle of the TALL λ grid: our
    choice, a parameter) so that the search stays |ks| × |α| evaluations.

    The mask depends on τ̄, so after unlearning every remaining τ_t is needed again: retrained
    (``vectors="retrain"``: a second round of finetunes, like TALL) or kept (``"keep"``: T·d·4
    extra bytes). Storage: τ̄ (one model) and the mask (1 bit per parameter)."""

    reference = ("Wang et al., Localizing Task Information for Improved Model Merging and Compression, ICML 2024 "
                 "(Consensus Merging; nik-dim/tall_masks)")
    scale_param = "alpha"
    cost_rule = "retrain-all"

    @dataclass
    class Params(Params):
        k: int | str = "val"          # how many TALL masks must agree: an integer ≥ 1, or "val" (from ks)
        alpha: float | str = "val"    # the served scale, a positive number, or "val"
        lam: float = 0.4              # λ of the task masks m_t
        ks: list = field(default_factory=lambda: list(K_GRID))
        vectors: str = "retrain"      # how a refresh gets every τ_t: "retrain" or "keep"

        def validate(self):
            if not is_val(self.k) and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
                raise ValueError(f"k (how many TALL masks must agree) must be an integer ≥ 1 or 'val', got {self.k!r}")
            if not is_val(self.alpha):
                self.alpha = check_grid([self.alpha], "alpha (the served scale, a positive number or 'val')")[0]
            self.lam = check_grid([self.lam], "lam (the TALL λ of the task masks)")[0]
            ks = self.ks
            if isinstance(ks, (str, bytes)) or not ks or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                             for v in ks):
                raise ValueError(f"ks must be a non-empty list of integers ≥ 1, got {ks!r}")
            self.ks = list(ks)
            if self.vectors not in VECTORS:
                raise ValueError(f"vectors must be one of {VECTORS}, got {self.vectors!r}")

    def __init__(self, **params):
        super().__init__(**params)
        self.keeps_vectors = self.p.vectors == "keep"
        self.mask: torch.Tensor | None = None  # packed m, 1 bit per parameter
        self.chosen: dict = {}

    # -- life cycle ------------------------------------------------------------------------------
    def fit(self, ctx, vectors):
        self._build(ctx, vectors)

    def refresh(self, ctx, removed, retrained):
        self._build(ctx, remaining_vectors(ctx, ctx.task_ids, self.params["vectors"], self.name))

    def agreement(self, ctx, vectors) -> torch.Tensor:
        """Σ_t m_t over the merged tasks (int32 per parameter), sorted by task id."""
        tau_bar, count = ctx.tau_bar, None
        for t in sorted(ctx.task_ids):
            m = tall_masks(vectors[t].values, tau_bar, self.params["lam"]).to(torch.int32)
            count = m if count is None else count.add_(m)
        return count

    def _build(self, ctx, vectors) -> None:
        ids = sorted(ctx.task_ids)
        self.mask, self.chosen = None, {}
        if not ids:
            return
        p = self.params
        count = self.agreement(ctx, vectors)
        ks = p["ks"] if is_val(p["k"]) else [p["k"]]
        alphas = scale_grid(len(ids)) if is_val(p["alpha"]) else (p["alpha"],)
        masks = {k: count >= k for k in ks}
        theta0, tau_bar = ctx.theta0, ctx.tau_bar
        grid = list(itertools.product(ks, alphas))
        best = grid[0] if len(grid) == 1 else choose(
            grid, lambda ka: mean_val_score(ctx, masked_weights(theta0, masks[ka[0]], tau_bar, ka[1]), ids)).value
        self.mask = pack(masks[best[0]])
        self.chosen = {name: v for name, v in zip(("k", "alpha"), best) if is_val(p[name])}

    # -- what is served --------------------------------------------------------------------------
    def resolved(self) -> tuple[int, float]:
        return int(self.chosen_value("k")), float(self.chosen_value("alpha"))

    def weights_for(self, ctx, task_id):
        if self.mask is None:
            return ctx.theta0
        return masked_weights(ctx.theta0, unpack(self.mask, ctx.setting.spec.numel), ctx.tau_bar, self.resolved()[1])

    def served_params(self, ctx):
        if self.mask is None:
            return {}
        k, alpha = self.resolved()
        return {"alpha": alpha, "k": k}

    def mask_density(self, ctx):
        if self.mask is None:
            return None
        return float(unpack(self.mask, ctx.setting.spec.numel).float().mean())

    def state(self, ctx):
        if self.mask is None:
            return {}, {}
        return {"mask": self.mask}, {"chosen": dict(self.chosen)}

    def load_state(self, ctx, tensors, meta):
        self.chosen = dict(meta.get("chosen", {}))
        self.mask = tensors.get("mask")
        if len(ctx.ledger) and self.mask is None:
            raise StateError("saved consensus state lacks its mask")
        if self.mask is not None:
            if self.mask.dtype != torch.uint8 or self.mask.numel() != (ctx.setting.spec.numel + 7) // 8:
                raise StateError("saved consensus mask has the wrong size or type for this spec")
            self.require_chosen(("k", "alpha"), "consensus")

    def storage_bytes(self, ctx):
        d = ctx.setting.spec.numel
        return storage_bytes(d, 1, 1) + (4 * d * len(ctx.vectors) if self.keeps_vectors else 0)

    # -- cost ------------------------------------------------------------------------------------
    def unlearning_cost(self, n_before, n_forgotten, steps):
        """Retrain τ_u; without kept vectors retrain the T − n others too (the mask needs them)."""
        c = Costs().round(n_forgotten, steps)
        if self.params["vectors"] == "retrain":
            c.round(n_before - n_forgotten, steps)
        return c
