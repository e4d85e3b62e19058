"""Determinism: stable seeds, explicit generators, pinned threads, environment fingerprint.

Retraining τ_u must reproduce it bit for bit. CPU results depend on the thread count and on
library versions, so every finetune runs inside :func:`deterministic` and every result
carries :func:`fingerprint`. Seeds come from SHA-256, never from Python's salted ``hash()``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from typing import Iterator

import numpy as np
import torch


def stable_seed(*keys: object) -> int:
    """A 63-bit seed from any JSON-able keys, e.g. ``stable_seed(seed, "task", task_id)``."""
    blob = json.dumps([str(k) for k in keys], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def generator(*keys: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`stable_seed` of ``keys``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(stable_seed(*keys))
    return g


def rng(*keys: object) -> np.random.Generator:
    """A NumPy ``Generator`` seeded by :func:`stable_seed` of ``keys``."""
    return np.random.default_rng(stable_seed(*keys))


@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """Pin the thread count and switch on deterministic algorithms; restore on exit."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def fingerprint(threads: int = 1, device: str = "cpu", dtype: str = "float32") -> dict:
    """What a bit-exact retrain depends on; recorded with every task vector and result."""
    info = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": device,
        "threads": int(threads),
        "dtype": dtype,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def fingerprint_digest(fp: dict) -> str:
    """A short stable digest of a fingerprint dictionary."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
