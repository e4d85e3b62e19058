"""A content-addressed store of task vectors on disk (safetensors + JSON metadata, never pickle).

The key of τ_t hashes everything it depends on: setting, the task's data, hyperparameters,
seed, sign vector and environment fingerprint. A finished finetune is never recomputed, and
an interrupted run loses none (each file is written to a temporary name and renamed).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .cache import atomic_save, cache_dir, content_key
from .determinism import fingerprint
from .params import ParamSpec
from .taskvector import TaskVector, sha256_tensor


class TaskVectorStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "task_vectors"
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, setting, task, seed: int, sign: torch.Tensor | None = None,
            projection: str = "after_step", config=None) -> str:
        cfg = config or setting.finetune_config
        return content_key("tv-v1", setting.name, setting.spec.digest(), task.digest(), cfg.to_json(),
                           int(seed), sha256_tensor(sign) if sign is not None else None,
                           projection if sign is not None else None, fingerprint(cfg.threads))

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, spec: ParamSpec) -> TaskVector | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["meta"])
                values = f.get_tensor("tau")
            tv = TaskVector(meta["task_id"], values, spec, meta["meta"])
            if tv.sha256 != meta["sha256"]:
                raise ValueError("hash mismatch")
            return tv
        except Exception:  # corrupt or foreign entry: recompute, never trust it
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, tv: TaskVector) -> None:
        meta = {"task_id": tv.task_id, "sha256": tv.sha256, "meta": tv.meta}
        atomic_save({"tau": tv.values}, self.path(key), metadata={"meta": json.dumps(meta, default=str)})

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.safetensors"))
