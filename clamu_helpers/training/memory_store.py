"""A task-vector store that lives in this process's memory: the default of a system without one.

:class:`MemoryStore` answers what :class:`~clamu_helpers.training.store.TaskVectorStore` answers
(keys, ``get``/``put``, ``open`` for reading a τ_t piece by piece, claims, masks), so a system
built without a store runs the same pipeline as one with a store on disk: finetunes go in
chunks into the store and the ledger, and the method reads each τ_t back when it needs it,
checked against the digest the ledger recorded (one pipeline, one set of tests, at every size;
a run at the paper's size passes a store on disk so that memory stays flat in T).

What differs from the disk store, and why:

* values are held as private copies (``put`` copies, every read copies), so no caller can
  change a stored τ_t in place; each read is checked against the digest recorded at ``put``;
* nothing is shared with other processes: ``shared`` is False, so finetune workers of other
  processes send their τ_t back and the parent files them
  (:func:`~clamu_helpers.training.parallel.run_finetunes`); claims always succeed;
* nothing outlives the process: there is nothing to purge on disk after unlearning, and
  :meth:`purge` drops the forgotten tasks' entries (and every mask) from memory.
"""
from __future__ import annotations

import contextlib
from pathlib import PurePath
from typing import Iterable, Iterator

import torch

from ..core import digests
from ..core.errors import ShapeMismatchError, StateError
from ..core.params import ParamSpec
from ..core.taskvector import TaskVector, sha256_tensor
from .store import TaskVectorStore, check_packed


class HeldVector:
    """One τ_t (or packed mask) held in memory, read the way a stored one is
    (:class:`~clamu_helpers.training.store.StoredVector`: ``read``, ``chunks``, ``load``)."""

    def __init__(self, values: torch.Tensor, digest: str, meta: dict):
        self._values, self.meta = values, meta
        self.numel, self.dtype = values.numel(), values.dtype
        self._digest = digest

    @property
    def task_id(self) -> str:
        return self.meta["task_id"]

    @property
    def digest(self) -> str:
        return self._digest

    def read(self, start: int, stop: int) -> torch.Tensor:
        """A copy of values [start, stop)."""
        if not 0 <= start <= stop <= self.numel:
            raise ShapeMismatchError(f"slice [{start}, {stop}) is outside a vector of {self.numel}")
        return self._values[start:stop].clone()

    def chunks(self, chunk: int, verify: bool = True) -> Iterator[torch.Tensor]:
        """Copies of consecutive pieces of ``chunk`` values; the digest is checked after the last."""
        for start in range(0, self.numel, chunk):
            yield self.read(start, min(start + chunk, self.numel))
        if verify:
            self._check()

    def tensor(self, name: str, spec: ParamSpec) -> torch.Tensor:
        """One named parameter of τ_t, shaped."""
        if spec.numel != self.numel or name not in spec.names:
            raise ShapeMismatchError(f"spec ({spec.numel} parameters) does not hold {name!r} of a vector of {self.numel}")
        i = spec.names.index(name)
        start = sum(spec.sizes[:i])
        return self.read(start, start + spec.sizes[i]).view(spec.shapes[i])

    def load(self) -> torch.Tensor:
        """A copy of all values (digest-checked)."""
        self._check()
        return self._values.clone()

    def _check(self) -> None:
        if not digests.matches(self._values, self._digest):
            raise StateError(f"τ_t of task {self.meta.get('task_id')!r} held in memory changed after it was filed")


class MemoryStore(TaskVectorStore):
    """:class:`~clamu_helpers.training.store.TaskVectorStore`'s interface, held in RAM."""

    #: other processes cannot write here: finetune workers send τ_t back to the parent
    shared = False

    def __init__(self):   # no directory: nothing on disk
        self.root = PurePath("<memory>")
        self._vectors: dict[str, HeldVector] = {}
        self._masks: dict[str, HeldVector] = {}

    def path(self, key: str):
        raise StateError("a MemoryStore has no files; use open(), get() or put()")

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def put(self, key: str, tv: TaskVector) -> None:
        meta = {"task_id": tv.task_id, "spec": tv.spec.digest(), "meta": dict(tv.meta)}
        self._vectors[key] = HeldVector(tv.values.detach().clone(), tv.digest, meta)

    def open(self, key: str, spec: ParamSpec | None = None) -> HeldVector:
        try:
            held = self._vectors[key]
        except KeyError:
            raise FileNotFoundError(f"task vector {key[:16]}… is not in this memory store") from None
        if spec is not None and spec.numel != held.numel:
            raise ShapeMismatchError(f"spec has {spec.numel} parameters, held vector {held.numel}")
        return held

    def get(self, key: str, spec: ParamSpec) -> TaskVector | None:
        """τ_t, a fresh copy, digest-checked; ``None`` when absent."""
        held = self._vectors.get(key)
        if held is None:
            return None
        tv = TaskVector(held.task_id, held.read(0, held.numel), spec, held.meta["meta"])
        if not tv.matches(held.digest):
            raise StateError(f"τ_t of task {held.task_id!r} held in memory changed after it was filed")
        return tv

    def keys(self) -> list[str]:
        return sorted(self._vectors)

    def __len__(self) -> int:
        return len(self._vectors)

    @contextlib.contextmanager
    def claim(self, key: str, wait: bool = False) -> Iterator[bool]:
        yield True   # one process, one system at a time: nobody else computes into this store

    # -- masks ------------------------------------------------------------------------------
    def put_mask(self, key: str, packed: torch.Tensor, d: int, task_id: str = "", meta: dict | None = None) -> None:
        check_packed(packed, d)
        info = {"task_id": str(task_id), "d": int(d), "meta": meta or {}}
        self._masks[key] = HeldVector(packed.detach().clone(), sha256_tensor(packed), info)

    def open_mask(self, key: str) -> HeldVector:
        try:
            return self._masks[key]
        except KeyError:
            raise FileNotFoundError(f"mask {key[:16]}… is not in this memory store") from None

    def get_mask(self, key: str) -> tuple[torch.Tensor, dict]:
        held = self.open_mask(key)
        return held.load(), held.meta

    def purge(self, setting_name: str, task_ids: Iterable[str], masks: bool = True, tmp_age_s: float = 0.0) -> list[str]:
        """Drop the forgotten tasks' τ_t of ``setting_name`` and (``masks``) every mask; returns
        the dropped keys."""
        wanted = {str(t) for t in task_ids}
        gone = [k for k, h in self._vectors.items()
                if h.task_id in wanted and (h.meta["meta"] or {}).get("setting") == setting_name]
        if masks:
            gone += list(self._masks)
            self._masks.clear()
        for k in gone:
            self._vectors.pop(k, None)
        return gone


__all__ = ["HeldVector", "MemoryStore"]
