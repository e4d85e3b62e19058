"""On-disk cache of content-addressed artefacts (pretrained M0 weights), safetensors only.

The folder is ``$CLAMU_CACHE`` or ``~/.cache/clamu_helpers``. A key is the SHA-256 of
everything the artefact depends on; files are written to a temporary name, fsynced and
renamed, so a crash never leaves a half-written entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file


def cache_dir() -> Path:
    d = Path(os.environ.get("CLAMU_CACHE", Path.home() / ".cache" / "clamu_helpers"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def content_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cached_tensors(kind: str, key: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load ``kind/key.safetensors`` from the cache, or build, save and return it."""
    path = cache_dir() / kind / f"{key}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a corrupt entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    tensors = build()
    atomic_save(tensors, path)
    return tensors
