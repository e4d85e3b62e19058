"""What a method may use: :class:`MethodContext`, the narrow contract between methods and the system.

A method never holds the :class:`~clamu_helpers.unlearning.system.UnlearningSystem`. Every call of the
method interface (``fit``, ``refresh``, ``weights_for``, ``state``...) receives a context that
carries exactly:

* ``setting`` (M0, θ0, the tasks' data, scoring) and ``theta0``;
* ``seed``, ``device`` and ``progress`` (show progress bars);
* ``ledger``: a read-only view of the exact merge ledger (ids, recorded SHA-256s, digest, τ̄,
  and :meth:`LedgerView.empty_like` for a method's own per-cluster ledgers), and ``tau_bar``;
* ``vectors``: the τ_t the system keeps (read-only; empty unless the method ``keeps_vectors``);
* ``costs``: the account the current phase charges (fitting or unlearning);
* ``retrain(ids)``: retrain τ_t deterministically, check each hash against the one recorded at
  merge time and charge one round of finetunes: the one place where unlearning retrains.

The context is built by the system for each call (``system.context()``) and never stored by a
method, so copying a method (the system's all-or-nothing backup) never copies the system.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Protocol, Sequence

import torch

from ..runtime.costs import Costs
from ..core.errors import StateError
from ..core.ledger import MergeLedger
from ..settings.base import Setting
from ..core.taskvector import TaskVector


class LedgerView:
    """Read-only view of a :class:`MergeLedger` (a method reads τ̄'s ledger, never changes it)."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: MergeLedger):
        self._ledger = ledger

    def __len__(self) -> int:
        return len(self._ledger)

    def __contains__(self, task_id) -> bool:
        return task_id in self._ledger

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self._ledger.task_ids

    @property
    def hashes(self) -> Mapping[str, str]:
        return MappingProxyType(self._ledger.hashes)

    @property
    def spec(self):
        return self._ledger.spec

    @property
    def scale_bits(self) -> int:
        return self._ledger.scale_bits

    @property
    def max_tasks(self) -> int:
        return self._ledger.max_tasks

    @property
    def digest_format(self) -> str:
        return self._ledger.digest_format

    def digest(self) -> str:
        return self._ledger.digest()

    def tau_bar(self) -> torch.Tensor:
        return self._ledger.tau_bar()

    def check_hashes(self, vectors: Mapping[str, TaskVector], what: str = "task vectors") -> None:
        """:meth:`MergeLedger.check_hashes` (raises ExactnessError on a mismatch)."""
        self._ledger.check_hashes(vectors, what)

    def empty_like(self) -> MergeLedger:
        """A new, empty ledger with this one's spec, scale and capacity (a cluster's own sum)."""
        led = self._ledger
        return MergeLedger(led.spec, led.scale_bits, led.max_tasks, digest=led.digest_format)


class _System(Protocol):
    """What :class:`MethodContext` reads from the system (kept structural: no import of it)."""

    setting: Setting
    seed: int
    device: torch.device
    progress: bool
    ledger: MergeLedger
    vectors: dict[str, TaskVector]
    tau_bar: torch.Tensor

    def retrain(self, task_ids: Sequence[str], desc: str = ..., stream: bool = ...) -> Mapping[str, TaskVector]: ...


class MethodContext:
    """What a method may use during one call (see the module docstring). ``costs`` is None
    outside fitting and unlearning: a method that charges work then is a bug, said so."""

    __slots__ = ("_system", "_costs")

    def __init__(self, system: _System, costs: Costs | None = None):
        self._system = system
        self._costs = costs

    @property
    def setting(self) -> Setting:
        return self._system.setting

    @property
    def theta0(self) -> torch.Tensor:
        return self._system.setting.theta0

    @property
    def seed(self) -> int:
        return self._system.seed

    @property
    def device(self) -> torch.device:
        return self._system.device

    @property
    def progress(self) -> bool:
        return bool(self._system.progress)

    @property
    def ledger(self) -> LedgerView:
        return LedgerView(self._system.ledger)

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self._system.ledger.task_ids

    @property
    def tau_bar(self) -> torch.Tensor:
        """τ̄ (float32, cached by the system until the merged set changes). Do not modify it."""
        return self._system.tau_bar

    @property
    def vectors(self) -> Mapping[str, TaskVector]:
        """The τ_t the system keeps (methods with ``keeps_vectors``), read-only."""
        return MappingProxyType(self._system.vectors)

    @property
    def costs(self) -> Costs:
        if self._costs is None:
            raise StateError("this method call may not charge costs (only fit and refresh do)")
        return self._costs

    def retrain(self, task_ids: Sequence[str], desc: str = "retrain", stream: bool = False) -> Mapping[str, TaskVector]:
        """τ_t of merged tasks retrained, hash-checked against the ledger, one round charged
        (``stream``: read back lazily from the store, a chunk retrained at a time)."""
        return self._system.retrain(task_ids, desc=desc, stream=stream)


__all__ = ["LedgerView", "MethodContext"]
