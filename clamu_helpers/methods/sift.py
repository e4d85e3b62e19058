"""SIFT-Masks (SIgn-Fixed Tuning-Masks): masks that each task fixes alone, before merging.

1. One global random sign vector v ∈ {−1, +1}^d is drawn once, before any training, from
   ``generator(sign_seed, "sift-sign")`` (``sign_seed`` defaults to the system's seed). It uses
   no data; its SHA-256 is kept in the method state so a loaded state is regenerated and checked.
2. Every finetune (and every retrain at unlearning) is sign-fixed: coordinates where
   τ_t ⊙ v ≤ 0 go back to M0 (``finetune(..., sign=v, projection=...)``), so τ_t ⊙ v ≥ 0.
3. The mask m_t = 1{τ_t ≠ 0} (= 1{τ_t ⊙ v > 0}) is taken at fit from τ_t alone and stored
   bit-packed (1 bit per parameter; a zlib-compressed figure is reported beside it).
4. τ̄ = Σ_t τ_t lives in the system's exact ledger.
5. Serving: a task with a mask gets M0 + s ⊙ (m_t ⊙ τ̄); a task without one (held out or
   unlearned) gets M0 + τ̄/T, the plain merge (computed as ``merge`` does: α = 1/T times τ̄).
6. Unlearning u: the system retrains τ_u sign-fixed, checks its hash and subtracts it; ``refresh``
   drops m_u, subtracts m_u from the count vector, and T ← T − 1 (T is the ledger's size).
   No other mask is touched: that is the method's whole point.

``scale`` (the paper is terse here; all four are offered):

* ``"1/T"`` (default, the final paper's rule): s = 1/T, i.e. M0 + m_t ⊙ (τ̄ / T).
* ``"count"``: s_i = 1 / c_i with the integer count c = Σ_t m_t (how many merged tasks moved
  coordinate i; c_i ≥ 1 wherever m_t,i = 1): not in the paper, offered for comparison. c is
  kept exactly (int32) and m_u is subtracted at unlearning.
* a number α: s = α (α = 1 is the draft's unscaled M0 + m_t ⊙ τ̄).
* ``"val"``: α chosen from :func:`clamu_helpers.localization.selection.scale_grid` (1/T is its first value)
  by the mean validation score over the masked tasks, as every method's served scale is chosen
  in the figures. It is chosen again after each unlearning request (validation scores only, no
  gradient step); the masks of the other tasks still do not change.

Controls (each a registered method that passes the same audit):

* ``sift-random-mask``: the same sign-fixed τ̄, but task t's mask is a random set of exactly
  |m_t| coordinates (drawn from (seed, t)): does the *choice* of coordinates matter, or only
  how many are kept?
* ``sift-merge``: the same sign-fixed finetuning, served M0 + s τ̄ for every task with no masks:
  what sign-fixing alone does, apart from the masks.

``projection``: ``"after_step"`` (default) or ``"before_step"``, passed to the finetuning.
Storage (``storage_bytes``): the global model (d float32) plus T packed masks (⌈d/8⌉ bytes
each); the sign vector is not counted because it is regenerated from its seed
(``storage_breakdown`` lists every part, compressed sizes included).

(Over 300 lines on purpose: SIFT-Masks and its two controls (random masks of the same density,
the merge of the same sign-fixed vectors) share the sign vector, the count and the serving rule,
and a control is only honest beside the method it controls.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..runtime.determinism import generator
from ..core.errors import ClamuError, ExactnessError, StateError
from ..core.packing import compress, pack, packed_bytes, unpack
from ..core.taskvector import sha256_tensor
from .base import Method, Params, register
from .declared import ONE_OVER_T, SCALE_GRID, VAL, Integer, Options, Real, one_over_t, param

SCALES = ("1/T", "count", "val")
PROJECTIONS = ("after_step", "before_step")


def sign_vector(d: int, seed: int) -> torch.Tensor:
    """v ∈ {−1, +1}^d (float32), drawn from ``generator(seed, "sift-sign")``."""
    bits = torch.randint(0, 2, (int(d),), generator=generator(seed, "sift-sign"), device="cpu")
    return (bits * 2 - 1).to(torch.float32)


def check_scale(scale):
    """``"1/T"``, ``"count"`` or a finite positive number (returned as float)."""
    if isinstance(scale, str):
        if scale not in SCALES:
            try:
                scale = float(scale)
            except ValueError:
                raise ClamuError(f"scale must be one of {SCALES} or a number, got {scale!r}") from None
        else:
            return scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ClamuError(f"scale must be one of {SCALES} or a number, got {scale!r}")
    scale = float(scale)
    if not (scale > 0 and scale < float("inf")):
        raise ClamuError(f"a numeric scale must be finite and positive, got {scale}")
    return scale


def serve(theta0: torch.Tensor, tau_bar: torch.Tensor, n_tasks: int, mask: torch.Tensor | None = None,
          count: torch.Tensor | None = None, scale="1/T") -> torch.Tensor:
    """The SIFT-Masks serving rule as a pure function (see the module docstring).

    ``mask`` None serves the plain merge θ0 + τ̄/T; with T = 0 (nothing merged) it is θ0.
    """
    if n_tasks == 0:
        return theta0.clone()
    alpha = one_over_t(n_tasks)
    if mask is None:
        return theta0 + alpha * tau_bar
    scale = check_scale(scale)
    if scale == "val":
        raise ClamuError('serve() needs a scale rule or number: resolve scale="val" to the chosen α first')
    if scale == "1/T":
        delta = alpha * tau_bar
    elif scale == "count":
        if count is None:
            raise ClamuError('scale="count" needs the count vector c = Σ_t m_t')
        delta = tau_bar / count.clamp(min=1).to(torch.float32)
    else:
        delta = scale * tau_bar
    return theta0 + torch.where(mask, delta, delta.new_zeros(()))


@register("sift")
class SiftMasks(Method):
    """SIFT-Masks: sign-fixed finetuning, per-task masks m_t = 1{τ_t ≠ 0}, exact τ̄."""

    reference = "SIFT-Masks: Exact Unlearning of Finetuning Data via Model Merging at Scale (2025), final version"
    scale_param = "scale"
    keeps_vectors = False
    retrains = True
    streams_vectors = True   # fit reads each τ_t once, for its mask and the count c

    @dataclass
    class Params(Params):
        scale: float | str = param(ONE_OVER_T, Real(), Options("count"), sentinels=(ONE_OVER_T, VAL),
                                   grid=SCALE_GRID)   # "1/T" (the paper), "count", "val" or a positive number
        projection: str = param("after_step", Options(*PROJECTIONS))   # when τ_t is projected onto v's orthant
        sign_seed: int | None = param(None, Integer(low=None, cast=True), none=True)   # seed of v (None: the system's)

    def __init__(self, **params):
        super().__init__(**params)
        self._sign: torch.Tensor | None = None
        self._sign_seed: int | None = None
        self.masks: dict[str, torch.Tensor] = {}      # task id → packed m_t (uint8)
        self.count: torch.Tensor | None = None        # c = Σ_t m_t (int32)
        self._d = 0

    # -- the sign vector v -------------------------------------------------------------------
    def sign(self, ctx) -> torch.Tensor:
        """v, drawn once per system (before any training) and reused for every (re)train."""
        seed = ctx.seed if self.p.sign_seed is None else self.p.sign_seed
        d = ctx.setting.spec.numel
        if self._sign is None or self._sign_seed != seed or self._sign.numel() != d:
            self._sign, self._sign_seed = sign_vector(d, seed), seed
        return self._sign

    def finetune_kwargs(self, ctx) -> dict:
        return {"sign": self.sign(ctx), "projection": self.p.projection}

    # -- masks -------------------------------------------------------------------------------
    def mask(self, task_id: str) -> torch.Tensor | None:
        """m_t as a bool vector (None for a task without a mask)."""
        packed = self.masks.get(str(task_id))
        return None if packed is None else unpack(packed, self._d)

    def fit(self, ctx, vectors) -> None:
        v = self.sign(ctx)
        self._d = v.numel()
        self.masks = {}
        self.count = torch.zeros(self._d, dtype=torch.int32, device="cpu")
        for tid in sorted(vectors):
            tau = vectors[tid].values
            wrong = int(((tau * v) < 0).sum())
            if wrong:
                raise ExactnessError(
                    f"task vector {tid!r} is not sign-fixed to this system's v ({wrong} coordinates with "
                    f"τ_t ⊙ v < 0): it was finetuned without SIFT's sign constraint or with another sign seed")
            m = self.task_mask(ctx, tid, tau)
            if m is None:
                continue
            self.masks[tid] = pack(m)
            self.count += m.to(torch.int32)
        self._choose(ctx)

    def task_mask(self, ctx, task_id: str, tau: torch.Tensor) -> torch.Tensor | None:
        """m_t = 1{τ_t ≠ 0}, fixed by the task alone (None: the task is served without a mask)."""
        return tau != 0

    def refresh(self, ctx, removed, retrained) -> None:
        """Drop m_u and subtract it from c; T ← T − 1 follows from the ledger. No other mask
        moves (with ``scale="val"`` the scale is chosen again on validation data)."""
        for tid in removed:
            packed = self.masks.pop(str(tid), None)
            if packed is not None:
                self.count -= unpack(packed, self._d).to(torch.int32)
        self._choose(ctx)

    def _choose(self, ctx) -> None:
        self.chosen = {}
        ids = [t for t in ctx.task_ids if t in self.masks] or list(ctx.task_ids)
        if ids:
            self.chosen = self.search(ctx, score=lambda v: self.validation_score(ctx, v, ids))

    def scale(self, ctx):
        """The served scale rule or number (``"val"`` resolved to the chosen α)."""
        return self.chosen_value("scale")

    def serve(self, ctx, task_id, scale) -> torch.Tensor:
        return serve(ctx.setting.theta0, ctx.tau_bar, len(ctx.ledger), self.mask(task_id), self.count, scale)

    # -- serving -----------------------------------------------------------------------------
    def group_of(self, ctx, task_id):
        return str(task_id) if str(task_id) in self.masks else "unmasked"

    def weights_for(self, ctx, task_id):
        return self.serve(ctx, str(task_id), self.scale(ctx))

    def mask_density(self, ctx):
        if not self.masks:
            return None
        return float(sum(int(unpack(p, self._d).sum()) for p in self.masks.values()) / (self._d * len(self.masks)))

    # -- state and storage -------------------------------------------------------------------
    def state(self, ctx):
        v = self.sign(ctx)
        tensors = {f"sift/mask/{tid}": p for tid, p in sorted(self.masks.items())}
        tensors["sift/sign"] = pack(v > 0)
        if self.count is not None:
            tensors["sift/count"] = self.count
        meta = {"sign_sha256": sha256_tensor(v), "sign_seed": self._sign_seed, "d": v.numel(),
                "masked_tasks": sorted(self.masks)}
        if self.chosen:
            meta["chosen"] = dict(self.chosen)
        return tensors, meta

    def load_state(self, ctx, tensors, meta) -> None:
        d = ctx.setting.spec.numel
        if int(meta.get("d", -1)) != d:
            raise StateError(f"saved SIFT state is for d={meta.get('d')} parameters, the setting has {d}")
        if "sift/sign" not in tensors:
            raise StateError("saved SIFT state has no sign vector")
        v = unpack(tensors["sift/sign"], d).to(torch.float32) * 2 - 1
        if sha256_tensor(v) != meta.get("sign_sha256"):
            raise StateError("saved SIFT sign vector does not match its recorded SHA-256 (corrupt state)")
        if meta.get("sign_seed") is not None and sha256_tensor(sign_vector(d, meta["sign_seed"])) != meta["sign_sha256"]:
            raise StateError(f"SIFT sign vector cannot be regenerated from seed {meta['sign_seed']} "
                             f"(a different torch RNG?): retraining would not reproduce τ_u")
        masks = {}
        count = torch.zeros(d, dtype=torch.int32, device="cpu")
        for tid in meta.get("masked_tasks", []):
            key = f"sift/mask/{tid}"
            if key not in tensors:
                raise StateError(f"saved SIFT state lacks the mask of task {tid!r}")
            try:
                m = unpack(tensors[key], d)
            except ValueError as e:
                raise StateError(f"mask of task {tid!r}: {e}") from None
            masks[tid] = tensors[key].clone()
            count += m.to(torch.int32)
        if "sift/count" in tensors and not torch.equal(tensors["sift/count"], count):
            raise StateError("saved SIFT count vector is not the sum of the saved masks")
        if len(ctx.ledger) and set(masks) - set(ctx.ledger.task_ids):
            raise StateError(f"SIFT masks of tasks not in the ledger: {sorted(set(masks) - set(ctx.ledger.task_ids))}")
        self._sign, self._sign_seed, self._d = v, meta.get("sign_seed"), d
        self.masks, self.count = masks, count
        self.chosen = dict(meta.get("chosen", {}))
        if len(ctx.ledger):
            self.require_chosen(what="SIFT")

    def storage_bytes(self, ctx) -> int:
        d = ctx.setting.spec.numel
        return 4 * d + len(self.masks) * packed_bytes(d)

    def storage_breakdown(self, ctx) -> dict:
        """Bytes by part: global model, masks packed (1 bit/parameter) and zlib-compressed, the
        sign vector if it were stored; mean mask density and bits per parameter of both forms."""
        d = ctx.setting.spec.numel
        unpacked = [unpack(p, d) for p in self.masks.values()]
        comp = [len(compress(m)) for m in unpacked]
        n = max(1, len(self.masks))
        dens = [float(m.float().mean()) for m in unpacked]
        return {"global_model": 4 * d, "masks_packed": len(self.masks) * packed_bytes(d),
                "masks_compressed": int(sum(comp)), "sign_vector_if_stored": packed_bytes(d),
                "tasks": len(self.masks), "d": d,
                "bits_per_parameter_packed": 8.0 * packed_bytes(d) / d if self.masks else 0.0,
                "bits_per_parameter_compressed": 8.0 * sum(comp) / (n * d),
                "mask_density": sum(dens) / n if dens else 0.0,
                "never_moved": float((self.count == 0).float().mean()) if self.count is not None else 1.0}


@register("sift-random-mask")
class SiftRandomMask(SiftMasks):
    """Control for SIFT-Masks: the same sign-fixed τ̄ and serving rule, but task t's mask is a
    random set of exactly |m_t| coordinates, drawn from ``generator(sign seed, "random-mask", t)``
    (no other input), so it keeps m_t's density and nothing of its choice. Unlearning drops r_u
    like SIFT-Masks drops m_u."""

    reference = "control for SIFT-Masks: masks of the same density on random coordinates"
    control_of = "sift"

    def task_mask(self, ctx, task_id, tau):
        seed = ctx.seed if self.p.sign_seed is None else self.p.sign_seed
        n = int((tau != 0).sum())
        keep = torch.randperm(tau.numel(), generator=generator(seed, "random-mask", task_id), device="cpu")[:n]
        return torch.zeros(tau.numel(), dtype=torch.bool, device="cpu").index_fill_(0, keep, True)


@register("sift-merge")
class SiftMerge(SiftMasks):
    """Control for SIFT-Masks: sign-fixed finetuning and the exact τ̄, served M0 + s τ̄ to every
    task with no mask (s = 1/T by default, a number, or ``"val"``): what sign-fixing alone does
    to a merge, apart from the masks. Stores one model."""

    reference = "control for SIFT-Masks: sign-fixed tuning served without masks"
    control_of = "sift"

    @dataclass
    class Params(SiftMasks.Params):
        def check(self):
            if self.scale == "count":
                raise ClamuError('scale: sift-merge has no masks to count; use "1/T", "val" or a number')

    def task_mask(self, ctx, task_id, tau):
        return None

    def serve(self, ctx, task_id, scale) -> torch.Tensor:
        n = len(ctx.ledger)
        if n == 0:
            return ctx.setting.theta0.clone()
        return ctx.setting.theta0 + (one_over_t(n) if scale == ONE_OVER_T else scale) * ctx.tau_bar

    def group_of(self, ctx, task_id):
        return "global"

    def storage_bytes(self, ctx) -> int:
        return 4 * ctx.setting.spec.numel
