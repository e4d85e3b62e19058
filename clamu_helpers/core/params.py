"""Which parameters are finetuned, and a flat float32 view of them.

A :class:`ParamSpec` names the trained parameters and their shapes, in model order. Task
vectors τ_t, the merge τ̄ and masks m_t are all flat vectors over this spec. ``flatten`` and
``unflatten`` round-trip exactly; :func:`functional` runs a model with a flat vector in place
of its trained parameters without copying the model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from .errors import ShapeMismatchError


@dataclass(frozen=True)
class ParamSpec:
    """Names and shapes of the trained parameters, in order (the coordinates of τ)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_model(cls, model: nn.Module, trainable: Callable[[str], bool] | Iterable[str] | None = None) -> "ParamSpec":
        """Spec of ``model``'s parameters; ``trainable`` is a predicate or a list of names
        (default: every parameter with ``requires_grad``)."""
        if trainable is None:
            keep = {n for n, p in model.named_parameters() if p.requires_grad}
            pred = keep.__contains__
        elif callable(trainable):
            pred = trainable
        else:
            wanted = set(trainable)
            missing = wanted - {n for n, _ in model.named_parameters()}
            if missing:
                raise ShapeMismatchError(f"model has no parameters named {sorted(missing)}")
            pred = wanted.__contains__
        items = [(n, tuple(p.shape)) for n, p in model.named_parameters() if pred(n)]
        if not items:
            raise ShapeMismatchError("no trainable parameters selected")
        return cls(tuple(n for n, _ in items), tuple(s for _, s in items))

    @property
    def sizes(self) -> list[int]:
        return [int(torch.Size(s).numel()) for s in self.shapes]

    @property
    def numel(self) -> int:
        """d, the length of every flat vector over this spec."""
        return sum(self.sizes)

    def digest(self) -> str:
        """SHA-256 of names and shapes: two specs are compatible iff digests are equal."""
        blob = json.dumps([self.names, self.shapes]).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_json(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, d: Mapping) -> "ParamSpec":
        return cls(tuple(d["names"]), tuple(tuple(int(x) for x in s) for s in d["shapes"]))

    def check(self, vec: torch.Tensor, what: str = "vector") -> None:
        """Raise :class:`ShapeMismatchError` unless ``vec`` is a flat vector of length d."""
        if vec.dim() != 1 or vec.numel() != self.numel:
            raise ShapeMismatchError(
                f"{what} has shape {tuple(vec.shape)}, expected a flat vector of {self.numel} "
                f"parameters ({len(self.names)} tensors)")

    def flatten(self, source: nn.Module | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The trained parameters of a model (or a name→tensor mapping) as one float32 vector."""
        tensors = dict(source.named_parameters()) if isinstance(source, nn.Module) else source
        parts = []
        for name, shape in zip(self.names, self.shapes):
            if name not in tensors:
                raise ShapeMismatchError(f"parameter {name!r} is missing (architecture mismatch?)")
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise ShapeMismatchError(f"parameter {name!r} has shape {tuple(t.shape)}, spec says {shape}")
            parts.append(t.detach().reshape(-1).to(torch.float32))
        return torch.cat(parts)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector back into named tensors (views, no copy)."""
        self.check(vec)
        return {n: p.view(s) for n, s, p in zip(self.names, self.shapes, torch.split(vec, self.sizes))}

    def load_into(self, model: nn.Module, vec: torch.Tensor) -> nn.Module:
        """Copy a flat vector into ``model``'s trained parameters in place; returns ``model``."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in self.unflatten(vec).items():
                params[name].copy_(t)
        return model


def functional(model: nn.Module, spec: ParamSpec, vec: torch.Tensor, *args, **kwargs):
    """Call ``model(*args)`` with its trained parameters replaced by the flat ``vec``; tensor
    arguments are moved to ``vec``'s device first (evaluation batches follow the weights)."""
    args = tuple(a.to(vec.device) if isinstance(a, torch.Tensor) else a for a in args)
    return torch.func.functional_call(model, spec.unflatten(vec), args, kwargs)
