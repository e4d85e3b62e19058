"""Unlearning requests on one saved system that several processes share.

Each process that serves the system sends its requests through :func:`unlearn_saved`: it loads
the current state, unlearns and saves (:func:`persistence.unlearn_durably`) under the
directory's lock, so concurrent requests apply one after another, none lost or applied twice.
A process that instead keeps a system loaded earlier and saves it after another process did is
refused by :func:`persistence.save` (its ``saved_at`` no longer names the current state).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import persistence
from ..settings.base import Setting
from .system import UnlearningSystem


def unlearn_saved(directory, setting: Setting, task_ids: Iterable[str], **load) -> dict:
    """Unlearn ``task_ids`` from the system saved in ``directory``, durably, under its lock.

    Ids another request already unlearned come back in ``"already_unlearned"`` (no second
    receipt); a bad request (unknown or repeated ids) raises before anything is written.
    ``load``: keywords of :meth:`UnlearningSystem.load` (e.g. ``store``)."""
    persistence.verify(directory)   # a missing state is a StateError before any lock is taken
    with persistence.locked(Path(directory)):
        system = UnlearningSystem.load(directory, setting, **load)
        return persistence.unlearn_durably(system, task_ids, directory)


__all__ = ["unlearn_saved"]
