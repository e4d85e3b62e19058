"""Crash-safe file writes, shared by the saved state (:mod:`clamu_helpers.unlearning.persistence`), the
task-vector store (:mod:`clamu_helpers.training.store`) and partial ledgers (:mod:`clamu_helpers.scaleout.partial`).

One protocol everywhere: write under a unique temporary name in the same folder, ``fsync`` the
file, rename it into place (``os.replace``: atomic on POSIX), ``fsync`` the folder so that the
rename survives a power loss. A reader sees the complete old file or the complete new one, never
a torn one. :func:`locked` serialises writers (and readers) of a folder with ``flock``.

:func:`checkpoint` is a test hook: the crash-safety tests set :data:`crash_hook` and kill the
process between two steps of a write.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import save_file

#: test hook, called with a step name between steps of a write (None: nothing happens)
crash_hook: Callable[[str], None] | None = None
_BLOCK = 1 << 20


def checkpoint(step: str) -> None:
    if crash_hook is not None:
        crash_hook(step)


def fsync_dir(path: Path) -> None:
    """Make renames and creations inside ``path`` durable (best effort: some platforms and file
    systems cannot open or fsync a folder; the rename is then all there is)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_bytes(path: Path, data: bytes, step: str) -> None:
    """Write and fsync ``data`` (in place, under a name the caller made temporary), with a
    :func:`checkpoint` half-way so the crash tests can leave a half-written file."""
    half = len(data) // 2
    with open(path, "wb") as f:
        f.write(data[:half])
        f.flush()
        checkpoint(f"{step}:half")
        f.write(data[half:])
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def temporary_name(path: Path) -> Path:
    """A unique hidden sibling of ``path`` (host, pid and a random suffix: safe on shared folders)."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def replace_with(path: Path, write: Callable[[Path], None]) -> None:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary sibling, which is fsynced and
    renamed over ``path``; the folder is fsynced after. The temporary never outlives an error,
    and a disk that refuses the write (full, read-only) raises a
    :class:`~clamu_helpers.core.errors.StorageError` naming ``path``, with the old file in place."""
    from .errors import is_storage_failure, storage_error
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except Exception as e:
        if is_storage_failure(e):   # a full or read-only disk: say where, in one line
            raise storage_error(path, e) from e
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """A safetensors file written with :func:`replace_with`."""
    replace_with(Path(path), lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                                                   metadata=metadata))


_held: dict[tuple[str, int], int] = {}   # (folder, thread) → depth of its locked() blocks


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file); a no-op without fcntl.
    Re-entrant within one thread (a load and a save inside one request's lock), exclusive
    between threads and processes; the kernel releases it when its holder dies."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    import threading
    key = (str(Path(directory).resolve()), threading.get_ident())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


__all__ = ["checkpoint", "crash_hook", "fsync_dir", "fsync_file", "locked", "replace_with", "sha256_file",
           "temporary_name", "write_bytes", "write_safetensors"]
