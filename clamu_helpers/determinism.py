"""Determinism: stable seeds, explicit generators, pinned threads, environment fingerprint.

Retraining τ_u must reproduce it bit for bit. CPU results depend on the thread count and on
library versions, so every finetune runs inside :func:`deterministic` and every result
carries :func:`fingerprint`. Seeds come from SHA-256, never from Python's salted ``hash()``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from typing import Iterator

import numpy as np
import torch

from .device import prepare_cuda   # importing it sets CUBLAS_WORKSPACE_CONFIG before CUDA initialises


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
def deterministic(threads: int = 1, device: str | torch.device = "cpu") -> Iterator[None]:
    """Pin the thread count and switch on deterministic algorithms; restore on exit. On a
    CUDA ``device`` also deterministic cuDNN/cuBLAS and no TF32 (:mod:`clamu_helpers.device`)."""
    if torch.device(device).type == "cuda":
        prepare_cuda()
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def fingerprint(threads: int = 1, device: str | torch.device = "cpu", dtype: str = "float32") -> dict:
    """What a bit-exact retrain depends on; recorded with every task vector and result.

    ``device``: where finetuning runs; on CUDA the GPU model, the CUDA and cuDNN versions are
    added (a retrain on another GPU model or CUDA may give other bits). ``dtype``: the
    finetuning precision (``FinetuneConfig.precision``: "float32" or "bf16")."""
    device = str(device)
    info = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": device,
        "threads": int(threads),
        "dtype": dtype,
    }
    if device.startswith("cuda"):
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["gpu"] = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None
        info["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    return info


def fingerprint_of(config, device: str | torch.device = "cpu") -> dict:
    """The fingerprint of finetuning with ``config`` (a ``FinetuneConfig``) on ``device``."""
    return fingerprint(config.threads, device, config.precision)


def fingerprint_diff(saved: dict, here: dict) -> dict[str, tuple]:
    """Fields whose values differ: name → (saved, here)."""
    return {k: (saved.get(k), here.get(k)) for k in sorted(set(saved) | set(here)) if saved.get(k) != here.get(k)}


def fingerprint_digest(fp: dict) -> str:
    """A short stable digest of a fingerprint dictionary."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
