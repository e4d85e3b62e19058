"""Localization masks over flat vectors: TALL, EMR, ClAMU optimized masks, and their storage.

A mask m (bool, length d) selects coordinates of a merged vector; the model served is
M0 + α m ⊙ τ̄ (TALL, ClAMU) or M0 + λ_t m_t ⊙ τ_uni (EMR). Everything here is a pure function
of flat tensors (plus, for ClAMU, a model to differentiate through), so the unlearning system
can recompute masks after τ̄ changes and get the bits a from-scratch fit gets.

* TALL-masks (Wang et al. 2024): m_t = 1{|τ_t| > λ_t · |τ̄ − τ_t|} with |τ_t| (the original
  formula, not the |θ0 − τ_t| of one popular port); λ_t from {0.2, …, 0.6} by validation score
  (:func:`choose_lambda`). Served M0 + α m_t ⊙ τ̄ (the original: α = 1.0 on the plain sum).
* EMR-merging (Huang et al. 2024) lives in :mod:`clamu_helpers.localization.emr_merging` (one
  implementation over chunks, shared with the streamed path).
* ClAMU (draft, Appendix, Algorithm 1 ``Localize``): :func:`optimize_mask` learns a score
  vector s with the straight-through estimator, m = 1{s > 0} (= 1{σ(s) > 0.5}); a
  :class:`MaskRun` is the same optimisation advanced in pieces (for the validation search).
* Storage as the paper counts it: float32 models (4 bytes/parameter) plus 1 bit/parameter per
  mask (:func:`storage_bytes`).

"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..runtime.device import autocast, check_precision, module_device
from ..runtime.determinism import deterministic
from ..core.errors import ShapeMismatchError
from ..core.packing import pack, packed_bytes, unpack
from ..core.params import functional
from .selection import choose
from ..runtime.timing import MASKS, timed_function

#: TALL's λ grid (Wang et al. 2024)
LAMBDA_GRID = (0.2, 0.3, 0.4, 0.5, 0.6)


def _flat(t: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ShapeMismatchError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise ShapeMismatchError(f"{what} must be a flat vector, got shape {tuple(t.shape)}")
    return t


def _same_length(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ShapeMismatchError(f"{what}: lengths differ ({a.shape[-1]} vs {b.shape[-1]})")


# -- serving ------------------------------------------------------------------------------------
def masked_weights(theta0: torch.Tensor, mask: torch.Tensor, vec: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """θ0 + α (m ⊙ vec): the weights a mask serves (coordinates outside m stay at M0)."""
    for t, what in ((theta0, "θ0"), (mask, "mask m"), (vec, "merged vector")):
        _flat(t, what)
    _same_length(theta0, vec, "θ0 and merged vector")
    _same_length(mask, vec, "mask and merged vector")
    return theta0 + float(alpha) * torch.where(mask.to(torch.bool), vec, vec.new_zeros(()))


# -- TALL ---------------------------------------------------------------------------------------
def tall_masks(tau_t: torch.Tensor, tau_bar: torch.Tensor, lam) -> torch.Tensor:
    """TALL mask m_t = 1{|τ_t| > λ_t · |τ̄ − τ_t|} (bool; strict, as the original
    ``generate_task_masks``: a coordinate no task moved is outside every mask).

    ``tau_t`` is one flat τ_t (d,) or a stack (n, d); ``tau_bar`` is τ̄ (d,); ``lam`` a number
    or, for a stack, one λ per row. Uses |τ_t| as in the original TALL code, not |θ0 − τ_t|.
    """
    _flat(tau_bar, "τ̄")
    if tau_t.dim() not in (1, 2):
        raise ShapeMismatchError(f"τ_t must be (d,) or (n, d), got shape {tuple(tau_t.shape)}")
    _same_length(tau_t, tau_bar, "τ_t and τ̄")
    lam_t = torch.as_tensor(lam, dtype=tau_t.dtype, device=tau_t.device)
    if not bool(torch.isfinite(lam_t).all()) or bool((lam_t < 0).any()):
        raise ValueError(f"λ must be finite and ≥ 0, got {lam}")
    if lam_t.dim() == 1:
        if tau_t.dim() != 2 or lam_t.numel() != tau_t.shape[0]:
            raise ShapeMismatchError("a vector of λ needs a stack of τ_t with one row per λ")
        lam_t = lam_t[:, None]
    return tau_t.abs() > lam_t * (tau_bar - tau_t).abs()


@dataclass
class LambdaChoice:
    """The λ picked for one task (or cluster), its mask, and the validation score of every λ."""

    lam: float
    mask: torch.Tensor
    scores: dict[float, float]


@timed_function(MASKS)
def choose_lambda(tau_t: torch.Tensor, tau_bar: torch.Tensor, scorer: Callable[[torch.Tensor], float],
                  grid: Sequence[float] = LAMBDA_GRID) -> LambdaChoice:
    """Pick λ_t from ``grid`` by ``scorer(mask) -> validation score`` (higher is better).

    Ties go to the first λ of ``grid`` (``argmax`` semantics, as TALL's code); a NaN score
    counts as −∞ (so a task without validation data gets ``grid[0]``).
    """
    if len(grid) == 0:
        raise ValueError("the λ grid is empty")
    masks = {}

    def score(lam):
        masks[lam] = tall_masks(tau_t, tau_bar, lam)
        return scorer(masks[lam])

    c = choose([float(v) for v in grid], score)
    return LambdaChoice(c.value, masks[c.value], c.scores)


# -- ClAMU optimized masks ----------------------------------------------------------------------
#: score updates of :func:`ste_score_step`: the draft's raw rule, or each step divided by its mean |·|
UPDATES = ("draft", "normalized")


@dataclass(frozen=True)
class MaskConfig:
    """Mask optimization (ClAMU ``Localize``): E_mask = ``steps`` score updates of size ``lr``
    (η) on batches of ``batch_size`` (None: the full batch every step); ``alpha`` is the α of
    the served model M0 + α m ⊙ τ̄; ``update`` is ``"draft"`` (the draft's raw straight-through
    rule, default) or ``"normalized"`` (each step divided by its mean |·|, so η is a step in
    score units whatever the scale of the gradients); ``threads`` is pinned during optimization;
    ``precision`` "bf16" runs the loss under bfloat16 autocast (scores, masks and ∂L/∂M stay
    float32), as the setting's finetunes do (ClAMU passes ``FinetuneConfig.precision``)."""

    steps: int = 100
    lr: float = 1.0
    batch_size: int | None = None
    alpha: float = 1.0
    update: str = "draft"
    threads: int = 1
    precision: str = "float32"

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"mask_steps (E_mask) must be a positive integer, got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"mask_lr (η) must be a finite positive number, got {self.lr!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ValueError(f"mask_batch_size must be a positive integer or None (full batch), got {self.batch_size!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {self.update!r}")
        check_precision(self.precision)


def mask_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """m = 1{s > 0}: the draft's 1{σ(s) > 0.5} in exact arithmetic. (σ(s) > 0.5 evaluated in
    float32 is False for 0 < s < ~6e-8, where σ(s) rounds to 0.5: the mask would then ignore
    small positive scores, which is an artefact of rounding, not of the method.)"""
    return scores > 0


def ste_score_step(scores: torch.Tensor, grad_m: torch.Tensor, tau_bar: torch.Tensor, lr: float,
                   alpha: float = 1.0, update: str = "draft", sig: torch.Tensor | None = None,
                   alpha_tau: torch.Tensor | None = None) -> torch.Tensor:
    """One straight-through update of the scores (draft, Appendix, Algorithm 1):

    s ← s − η (∂L/∂M) ⊙ σ(s)(1 − σ(s)) ⊙ α τ̄.

    ``grad_m`` is ∂L/∂M at M = M0 + α m ⊙ τ̄. The α comes from the chain rule through the
    served model (∂M/∂m = α τ̄); with α = 1 this is exactly the draft's rule (``update="draft"``).
    ``update="normalized"`` divides the step by its mean absolute value (left as is when that
    is 0), so η is measured in score units. ``sig`` = σ(s) and ``alpha_tau`` = α τ̄ may be passed
    precomputed (the loop does).
    """
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    sig = torch.sigmoid(scores) if sig is None else sig
    alpha_tau = float(alpha) * tau_bar if alpha_tau is None else alpha_tau
    step = grad_m * (sig * (1 - sig))
    step.mul_(alpha_tau)
    if update == "normalized":
        scale = step.abs().mean()
        if float(scale) > 0:
            step.div_(scale)  # |step_i| ≤ d after this, so no overflow even for a subnormal scale
    return scores.sub(step, alpha=float(lr))


class MaskRun:
    """ClAMU's ``Localize`` for one cluster as a run that can be advanced in pieces.

    s starts at 0 (or ``scores``); each update: m = 1{s > 0}, M = M0 + α m ⊙ τ̄, the loss
    ``setting.batch_loss(M, x, y)`` on a batch (explicit ``generator``), ∂L/∂M by autograd through
    :func:`clamu_helpers.core.params.functional`, then :func:`ste_score_step`. ``tau_bar`` is the
    vector the mask selects from (τ̄ for ClAMU; |τ̄| ⊙ r for the supermask control). ``setting``
    needs ``model``, ``spec``, ``theta0`` and ``batch_loss``. Deterministic: pinned threads,
    deterministic algorithms, batches only from ``generator``.

    :meth:`advance` makes more updates, up to ``config.steps`` in all. The scores are the whole
    state of the draft's update (no momentum) and the batches come from one generator in order,
    so advancing 5, then 5, then 10 steps gives the bits of one run of 20: a validation search
    can stop weak candidates early and carry the survivors on (:class:`clamu_helpers.localization.selection.Halving`).
    Runs where M0 (``setting.model``) lives; :attr:`mask` and :attr:`scores` come back on the CPU.
    """

    def __init__(self, setting, tau_bar: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor],
                 config: MaskConfig = MaskConfig(), generator: torch.Generator | None = None,
                 scores: torch.Tensor | None = None):
        from ..training.finetune import batches

        spec, dev = setting.spec, module_device(setting.model)
        spec.check(tau_bar, "τ̄")
        x, y = data
        if len(y) == 0:
            raise ValueError("mask optimization needs training data")
        s = torch.zeros(spec.numel, dtype=torch.float32, device=dev) if scores is None else scores.detach().to(dev, copy=True)
        spec.check(s, "scores s")
        self.full = config.batch_size is None or config.batch_size >= len(y)
        if not self.full and generator is None:
            raise ValueError("mini-batch mask optimization needs an explicit torch.Generator")
        self.setting, self.config, self.dev, self.data = setting, config, dev, (x, y)
        self.tau_bar, self._s, self.done = tau_bar.to(dev), s, 0
        self._batches = None if self.full else batches(len(y), config.batch_size, config.steps, generator)

    @timed_function(MASKS)
    def advance(self, steps: int) -> "MaskRun":
        """Make ``steps`` more updates (at most what is left of ``config.steps``)."""
        cfg, setting = self.config, self.setting
        steps = min(int(steps), cfg.steps - self.done)
        if steps <= 0:
            return self
        spec, dev, (x, y) = setting.spec, self.dev, self.data
        alpha_tau = float(cfg.alpha) * self.tau_bar
        theta0 = setting.theta0.to(dev)
        # M0 + α m ⊙ τ̄ as (θ0 + 0) + α τ̄ · m in one branch-free pass (torch.where branches per
        # element, 2× slower on a random mask): the bits of masked_weights(θ0, m, τ̄, α) for a finite
        # τ̄ (θ0 + 0 turns −0 into +0 as θ0 + where(m, α τ̄, 0) does; only a coordinate with θ0 = −0
        # and α τ̄ = −0 inside the mask would differ, by the sign of a zero weight)
        off = theta0 + 0.0
        s = self._s
        with deterministic(cfg.threads, dev):
            for _ in range(steps):
                if self.full:
                    xb, yb = x, y
                else:
                    idx = next(self._batches)
                    xb, yb = x[idx], y[idx]
                weights = torch.addcmul(off, alpha_tau, mask_from_scores(s).to(off.dtype)).requires_grad_(True)
                with autocast(dev, cfg.precision):
                    loss = setting.batch_loss(lambda *a: functional(setting.model, spec, weights, *a), xb, yb.to(dev))
                (grad,) = torch.autograd.grad(loss, weights)
                s = ste_score_step(s, grad, self.tau_bar, cfg.lr, cfg.alpha, cfg.update, None, alpha_tau)
        self._s, self.done = s, self.done + steps
        return self

    @property
    def scores(self) -> torch.Tensor:
        return self._s.cpu()

    @property
    def mask(self) -> torch.Tensor:
        return mask_from_scores(self._s).cpu()


def optimize_mask(setting, tau_bar: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor],
                  config: MaskConfig = MaskConfig(), generator: torch.Generator | None = None,
                  scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ClAMU's ``Localize`` for one cluster: (m, s) after ``config.steps`` updates of a
    :class:`MaskRun` (see there)."""
    run = MaskRun(setting, tau_bar, data, config, generator, scores).advance(config.steps)
    return run.mask, run.scores


# -- storage ------------------------------------------------------------------------------------
def pack_masks(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack of packed masks: uint8 (K, ⌈d/8⌉) (K may be 0)."""
    if not masks:
        return torch.zeros((0, 0), dtype=torch.uint8, device="cpu")
    packed = [pack(m) for m in masks]
    if len({p.numel() for p in packed}) != 1:
        raise ShapeMismatchError("masks of different lengths")
    return torch.stack(packed)


def unpack_masks(packed: torch.Tensor, d: int) -> list[torch.Tensor]:
    """Inverse of :func:`pack_masks`."""
    if packed.dim() != 2:
        raise ShapeMismatchError(f"packed masks must be (K, ⌈d/8⌉), got {tuple(packed.shape)}")
    return [unpack(row, d) for row in packed]


def storage_bytes(d: int, models: int = 1, masks: int = 0, scalars: int = 0) -> int:
    """Bytes as the paper counts them: ``models`` float32 vectors of d parameters, ``masks`` masks
    at 1 bit/parameter (:func:`clamu_helpers.core.packing.packed_bytes`), ``scalars`` float32 numbers."""
    if min(d, models, masks, scalars) < 0:
        raise ValueError("storage counts must be ≥ 0")
    return 4 * int(d) * int(models) + int(masks) * packed_bytes(d) + 4 * int(scalars)


__all__ = ["LAMBDA_GRID", "LambdaChoice", "MaskConfig", "MaskRun", "choose_lambda",
           "UPDATES", "mask_from_scores", "masked_weights", "optimize_mask", "pack_masks", "ste_score_step",
           "storage_bytes", "tall_masks", "unpack_masks"]
