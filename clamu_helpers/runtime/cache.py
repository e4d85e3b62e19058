"""On-disk cache of content-addressed artefacts (pretrained M0 weights), safetensors only.

The folder is ``$CLAMU_CACHE`` or ``~/.cache/clamu_helpers``. A key is the SHA-256 of
everything the artefact depends on; files are written to a temporary name, fsynced and
renamed, so a crash never leaves a half-written entry; one process builds an entry while the
others that want it wait (a lock file per key).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux: entries may be built twice, never corrupted
    fcntl = None


def cache_dir() -> Path:
    """``$CLAMU_CACHE`` (default ``~/.cache/clamu_helpers``), created if missing."""
    d = Path(os.environ.get("CLAMU_CACHE", Path.home() / ".cache" / "clamu_helpers"))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from ..core.errors import storage_error
        raise storage_error(d, e, "the cache folder (set CLAMU_CACHE to move it)") from e
    return d


def content_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save ``tensors`` at ``path`` atomically (:func:`clamu_helpers.core.atomic.write_safetensors`)."""
    from ..core.atomic import write_safetensors
    write_safetensors(tensors, Path(path), metadata)


@contextlib.contextmanager
def _key_lock(path: Path):
    """Hold ``path``'s lock file while it is built: a second process asking for the same entry
    waits and then reads it instead of building it again (the seeds and notebooks of a run start
    at once). The lock is a ``flock``, released by the kernel when its holder dies."""
    if fcntl is None:
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:   # a read-only cache: nothing can be built into it anyway; the write will say so
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:   # a file system without flock: build without waiting
            pass
        yield
    finally:
        os.close(fd)


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a corrupt entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    return None


def cached_tensors(kind: str, key: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load ``kind/key.safetensors`` from the cache, or build, save and return it (one process
    builds a given entry at a time; the others wait for it)."""
    path = cache_dir() / kind / f"{key}.safetensors"
    found = _load(path)
    if found is not None:
        return found
    with _key_lock(path):
        found = _load(path)          # built by another process while this one waited
        if found is not None:
            return found
        tensors = build()
        atomic_save(tensors, path)
    return tensors
