"""The exact merge τ̄ = Σ_t τ_t: an order-independent fixed-point accumulator.

Float addition is not associative, so (τ̄ + τ_u) − τ_u is not τ̄ in float32. The ledger
rounds each task vector once, deterministically, to integer multiples of 2^-``scale_bits``
and sums those integers in int64. Adding and removing in any order then yields exactly the
integers of a from-scratch merge of the tasks that remain, and τ̄ (and everything served
from it) is a pure function of that set. The ledger also records the SHA-256 of every merged
τ_t and refuses to subtract a vector whose bits differ (:class:`ExactnessError`).
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable, Mapping

import torch

from .errors import (DuplicateTaskError, ExactnessError, NonFiniteError, ShapeMismatchError,
                     UnknownTaskError)
from .params import ParamSpec
from .taskvector import TaskVector


class MergeLedger:
    """Exact τ̄ over a parameter spec, with a per-task hash record.

    ``scale_bits`` sets the grid (2^-40 ≈ 9e-13 by default, far below float32 resolution
    of typical weights). ``max_tasks`` bounds the number of merged tasks so that the int64
    sum cannot overflow: entries of τ_t must satisfy |τ| < 2^(62 − scale_bits − log2 max_tasks).
    """

    def __init__(self, spec: ParamSpec, scale_bits: int = 40, max_tasks: int = 4096):
        self.spec = spec
        self.scale_bits = int(scale_bits)
        self.max_tasks = int(max_tasks)
        headroom = 62 - self.scale_bits - max(1, (self.max_tasks - 1).bit_length())
        if headroom < 0:
            raise ValueError("scale_bits and max_tasks leave no int64 headroom")
        self.max_abs = float(2 ** headroom)
        self._sum = torch.zeros(spec.numel, dtype=torch.int64)
        self._hashes: dict[str, str] = {}

    # -- the two operations ------------------------------------------------------------
    def quantize(self, tv: TaskVector) -> torch.Tensor:
        """τ_t on the fixed-point grid, as int64 (after every validity check)."""
        if tv.spec.digest() != self.spec.digest():
            raise ShapeMismatchError(
                f"task vector {tv.task_id!r} has a different parameter spec (d={tv.spec.numel}) "
                f"than the ledger (d={self.spec.numel})")
        tv.check_finite()
        big = float(tv.values.abs().max()) if tv.values.numel() else 0.0
        if big >= self.max_abs:
            raise NonFiniteError(
                f"task vector {tv.task_id!r} has an entry of magnitude {big:.3g} ≥ {self.max_abs:g}, "
                f"outside the ledger's exact range (lower scale_bits or max_tasks)")
        q = tv.values.to(torch.float64).mul_(2.0 ** self.scale_bits).round_()
        return q.to(torch.int64)

    def add(self, task_id: str, tv: TaskVector) -> None:
        """τ̄ ← τ̄ + τ_t, recording SHA-256(τ_t). Raises on a repeated id or a bad vector."""
        task_id = str(task_id)
        if task_id in self._hashes:
            raise DuplicateTaskError(f"task {task_id!r} is already merged")
        if len(self._hashes) >= self.max_tasks:
            raise ValueError(f"ledger is full ({self.max_tasks} tasks); create it with a larger max_tasks")
        q = self.quantize(tv)
        self._sum += q
        self._hashes[task_id] = tv.sha256

    def remove(self, task_id: str, tv: TaskVector) -> None:
        """τ̄ ← τ̄ − τ_u after checking that τ_u has exactly the bits recorded at merge time."""
        task_id = str(task_id)
        if task_id not in self._hashes:
            raise UnknownTaskError(f"task {task_id!r} is not merged (merged: {len(self._hashes)} tasks)")
        if tv.sha256 != self._hashes[task_id]:
            raise ExactnessError(
                f"retrained task vector for {task_id!r} has SHA-256 {tv.sha256[:16]}…, but "
                f"{self._hashes[task_id][:16]}… was merged: finetuning was not reproduced bit for "
                f"bit (changed thread count, library version, data or hyperparameters?). "
                f"Nothing was subtracted.")
        q = self.quantize(tv)
        self._sum -= q
        del self._hashes[task_id]

    # -- what is served ------------------------------------------------------------------
    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._hashes))

    @property
    def hashes(self) -> dict[str, str]:
        return dict(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, task_id) -> bool:
        return str(task_id) in self._hashes

    def tau_bar(self) -> torch.Tensor:
        """τ̄ = Σ_t τ_t as float32 (a pure function of the merged set)."""
        return self._sum.to(torch.float64).mul_(2.0 ** -self.scale_bits).to(torch.float32)

    def digest(self) -> str:
        """SHA-256 of the served state: spec, grid, merged ids with their hashes, and the sum."""
        h = hashlib.sha256()
        h.update(json.dumps({"spec": self.spec.digest(), "scale_bits": self.scale_bits,
                             "tasks": sorted(self._hashes.items())}).encode())
        h.update(self._sum.numpy().tobytes())
        return h.hexdigest()

    # -- construction and persistence -----------------------------------------------------
    @classmethod
    def from_vectors(cls, tvs: Iterable[TaskVector], spec: ParamSpec | None = None, **kw) -> "MergeLedger":
        tvs = list(tvs)
        if spec is None:
            if not tvs:
                raise ValueError("need a spec or at least one task vector")
            spec = tvs[0].spec
        led = cls(spec, **kw)
        for tv in tvs:
            led.add(tv.task_id, tv)
        return led

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) for saving with safetensors + JSON."""
        meta = {"scale_bits": self.scale_bits, "max_tasks": self.max_tasks,
                "hashes": dict(sorted(self._hashes.items())), "spec": self.spec.to_json()}
        return {"ledger_sum": self._sum.clone()}, meta

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> "MergeLedger":
        led = cls(ParamSpec.from_json(meta["spec"]), meta["scale_bits"], meta["max_tasks"])
        s = tensors["ledger_sum"]
        if s.dtype != torch.int64 or s.shape != led._sum.shape:
            raise ShapeMismatchError("saved ledger sum does not match its spec")
        led._sum = s.clone()
        led._hashes = dict(meta["hashes"])
        return led
