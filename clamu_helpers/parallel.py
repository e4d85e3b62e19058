"""Running many finetunes: each task is independent, so this is embarrassingly parallel.

``run_finetunes`` is the single entry point; ``backend="serial"`` runs them here with a
progress bar. Every backend must give bit-identical task vectors (one pinned thread each).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from tqdm.auto import tqdm

from .finetune import finetune
from .taskvector import TaskVector

if TYPE_CHECKING:
    from .settings.base import Setting
    from .store import TaskVectorStore

BACKENDS = ("serial",)


def run_finetunes(setting: "Setting", task_ids: Sequence[str], seed: int = 0, backend: str = "serial",
                  store: "TaskVectorStore | None" = None, progress: bool = True, desc: str = "finetune",
                  **kwargs) -> dict[str, TaskVector]:
    """τ_t for each task id (from ``store`` when it already holds it), in input order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {BACKENDS}")
    out: dict[str, TaskVector] = {}
    for tid in tqdm(list(task_ids), desc=desc, disable=not progress, leave=False):
        task = setting.task(tid)
        key = store.key(setting, task, seed, **kwargs) if store is not None else None
        tv = store.get(key, setting.spec) if key is not None else None
        if tv is None:
            tv = finetune(setting, task, seed=seed, **kwargs)
            if store is not None:
                store.put(key, tv)
        out[tid] = tv
    return out
