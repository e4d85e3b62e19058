"""``clamu-supermask``: the control for ClAMU's optimized masks (supermasks, Zhou et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..runtime.determinism import generator
from .base import register
from .clamu import Clamu
from .declared import Integer, param


@register("clamu-supermask")
class ClamuSupermask(Clamu):
    """Control for ClAMU: the identical mask optimisation and search, over |τ̄| ⊙ r instead of
    τ̄, with r ∈ {−1, +1}^d a random sign vector drawn from ``generator(sign_seed, "supermask")``
    (``sign_seed`` defaults to the system's seed); served M0 + α m_k ⊙ (|τ̄| ⊙ r). The vector keeps
    τ̄'s magnitudes but none of its directions: if this control matches ClAMU, the masks train a
    supermask on the cluster's own data rather than recover what merging knew."""

    reference = "control: a supermask (Zhou et al., Deconstructing Lottery Tickets, NeurIPS 2019) over |τ̄| with random signs"
    control_of = "clamu"

    @dataclass
    class Params(Clamu.Params):
        sign_seed: int | None = param(None, Integer(low=None, cast=True), none=True)   # seed of r (None: the system's)

    def __init__(self, **params):
        super().__init__(**params)
        self._target: tuple[str, torch.Tensor] | None = None

    def signs(self, ctx) -> torch.Tensor:
        seed = ctx.seed if self.p.sign_seed is None else self.p.sign_seed
        bits = torch.randint(0, 2, (ctx.setting.spec.numel,), generator=generator(seed, "supermask"), device="cpu")
        return (bits * 2 - 1).to(torch.float32)

    def target(self, ctx) -> torch.Tensor:
        """|τ̄| ⊙ r, recomputed only when τ̄ changes."""
        key = ctx.ledger.digest()
        if self._target is None or self._target[0] != key:
            self._target = (key, ctx.tau_bar.abs() * self.signs(ctx))
        return self._target[1]


__all__ = ["ClamuSupermask"]
