"""Task vectors τ_t = M_t − M0 as flat float32 vectors over a :class:`ParamSpec`.

In the tone of ``mlfoundations/task_vectors``: task vectors add, negate and scale, and
``apply_to`` turns one into model weights M0 + α τ.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import digests
from .errors import NonFiniteError, ShapeMismatchError
from .params import ParamSpec


def sha256_tensor(t: torch.Tensor) -> str:
    """SHA-256 (bare hex) of a tensor's dtype, shape and raw bytes: for the small tensors whose
    records say ``sha256`` (masks, sign vectors, θ0); task vectors use :attr:`TaskVector.digest`."""
    return digests.tensor(t, digests.LEGACY)


@dataclass(frozen=True, eq=False)
class TaskVector:
    """τ_t: a flat float32 vector, its parameter spec, and what produced it (``meta``)."""

    task_id: str
    values: torch.Tensor
    spec: ParamSpec
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.values.dtype != torch.float32:
            raise ShapeMismatchError(f"task vector {self.task_id!r} must be float32, got {self.values.dtype}")
        self.spec.check(self.values, f"task vector {self.task_id!r}")

    def digest_in(self, fmt: str) -> str:
        """Digest of the exact bits of τ_t in format ``fmt`` (:mod:`clamu_helpers.core.digests`),
        computed once per format."""
        cache = self.__dict__.setdefault("_digests", {})
        if fmt not in cache:
            cache[fmt] = digests.tensor(self.values, fmt)
        return cache[fmt]

    @property
    def digest(self) -> str:
        """Digest of the exact bits of τ_t in the default format (e.g. ``"blake3:…"``)."""
        return self.digest_in(digests.DEFAULT)

    def matches(self, recorded: str) -> bool:
        """Are these the bits ``recorded`` was computed from (in the algorithm it names)?"""
        return digests.same(self.digest_in(digests.format_of(recorded)), recorded)

    def check_finite(self) -> None:
        if not bool(torch.isfinite(self.values).all()):
            bad = int((~torch.isfinite(self.values)).sum())
            raise NonFiniteError(f"task vector {self.task_id!r} has {bad} NaN/inf entries; refusing to merge it")

    def _other(self, other: "TaskVector") -> torch.Tensor:
        if other.spec.digest() != self.spec.digest():
            raise ShapeMismatchError(f"task vectors {self.task_id!r} and {other.task_id!r} have different parameter specs")
        return other.values

    def __add__(self, other: "TaskVector") -> "TaskVector":
        return TaskVector(f"{self.task_id}+{other.task_id}", self.values + self._other(other), self.spec)

    def __radd__(self, other):  # lets sum([...]) start from 0
        return self if other == 0 else self.__add__(other)

    def __neg__(self) -> "TaskVector":
        return TaskVector(f"-{self.task_id}", -self.values, self.spec)

    def __sub__(self, other: "TaskVector") -> "TaskVector":
        return self + (-other)

    def __mul__(self, alpha: float) -> "TaskVector":
        return TaskVector(f"{alpha}*{self.task_id}", self.values * float(alpha), self.spec)

    __rmul__ = __mul__

    def apply_to(self, theta0: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Flat weights M0 + α τ for the flat pretrained weights ``theta0``."""
        self.spec.check(theta0, "pretrained weights")
        return theta0 + float(alpha) * self.values
