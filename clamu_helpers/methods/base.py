"""The method interface of :class:`UnlearningSystem`, and the registry of methods.

A method decides what is served on top of the exact merge τ̄ (kept by the system's ledger):
``fit`` learns its extra state (masks, clusters, scales), ``weights_for`` gives a task's flat
weights, ``refresh`` recomputes what unlearning made stale, ``state`` is what must be
bit-identical to a from-scratch fit (the audit hashes it), and ``storage_bytes`` counts what
serving stores, the way the paper counts it.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Callable

import torch

from ..taskvector import sha256_tensor

if TYPE_CHECKING:
    from ..system import UnlearningSystem

METHODS: dict[str, type["Method"]] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def get_method(name: str, **params) -> "Method":
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name](**params)


class Method:
    name = "method"
    #: keep every τ_t in memory after fit (local models; methods whose refresh needs them)
    keeps_vectors = False
    #: unlearning retrains τ_u (False only for ``local``, which stores τ_u itself)
    retrains = True

    def __init__(self, **params):
        if params:
            raise TypeError(f"method {self.name!r} takes no parameters {sorted(params)}")
        self.params: dict = {}

    # -- life cycle ------------------------------------------------------------------------
    def finetune_kwargs(self, system: "UnlearningSystem") -> dict:
        """Extra keyword arguments for :func:`clamu_helpers.finetune.finetune` (SIFT's sign)."""
        return {}

    def fit(self, system: "UnlearningSystem", vectors: dict) -> None:
        """Learn the method's state once τ̄ holds every task (``vectors``: id → τ_t)."""

    def refresh(self, system: "UnlearningSystem", removed: list[str]) -> None:
        """Recompute what unlearning ``removed`` made stale (default: nothing)."""

    def group_of(self, system: "UnlearningSystem", task_id: str) -> str:
        """Tasks of one group are served the same weights (evaluation computes them once)."""
        return "global"

    def weights_for(self, system: "UnlearningSystem", task_id: str) -> torch.Tensor:
        raise NotImplementedError

    # -- what is served ------------------------------------------------------------------
    def state(self, system: "UnlearningSystem") -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) of the served state beyond τ̄."""
        return {}, {}

    def load_state(self, system: "UnlearningSystem", tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore what :meth:`state` returned (persistence). ``self.params`` must hold the
        JSON-able constructor keyword arguments, so ``get_method(name, **params)`` rebuilds it."""

    def state_digest(self, system: "UnlearningSystem") -> str:
        tensors, meta = self.state(system)
        h = hashlib.sha256(json.dumps({"method": self.name, "params": self.params, "meta": meta},
                                      sort_keys=True, default=str).encode())
        for k in sorted(tensors):
            h.update(f"{k}:{sha256_tensor(tensors[k])}".encode())
        return h.hexdigest()

    def storage_bytes(self, system: "UnlearningSystem") -> int:
        """Bytes stored to serve: the global model (d float32) plus the method's extras."""
        return 4 * system.setting.spec.numel
