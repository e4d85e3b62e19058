"""Which precision a setting finetunes and optimises masks in, on this machine.

A setting's profile may declare ``"auto"`` (:data:`AUTO`): bfloat16 autocast where the
processor computes bfloat16 natively (:func:`native_bf16`), float32 elsewhere, since emulated
bf16 is 2–10× *slower* than float32 (benchmarks/RESULTS.md, "bfloat16 autocast").
``$CLAMU_PRECISION`` (``float32`` | ``bf16``) overrides what a profile declares. The resolved
precision is what ``FinetuneConfig.precision`` holds, so it is in the fingerprint and in every
task-vector cache key.
"""
from __future__ import annotations

import os

import torch

from .determinism import cpu_kernels
from .device import PRECISIONS, check_precision

#: a profile's precision that :func:`resolve_precision` decides on this machine
AUTO = "auto"
#: processor flags (/proc/cpuinfo) of native bfloat16 arithmetic that oneDNN uses on the CPU
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA device that supports it, or a CPU
    with one of :data:`NATIVE_BF16_FLAGS` (False where /proc/cpuinfo cannot be read)."""
    d = torch.device(device)
    if d.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    flags = cpu_kernels()["cpu_flags"] or []
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_precision(declared: str, device: str | torch.device = "cpu") -> str:
    """The precision a setting finetunes and optimises masks in: ``$CLAMU_PRECISION`` when set
    (``float32`` | ``bf16``), else ``declared``, where ``"auto"`` is bf16 if :func:`native_bf16`
    and float32 otherwise."""
    env = os.environ.get("CLAMU_PRECISION", "").strip()
    if env:
        if env not in PRECISIONS:
            raise ValueError(f"CLAMU_PRECISION must be one of {PRECISIONS}, got {env!r}")
        return env
    if declared == AUTO:
        return "bf16" if native_bf16(device) else "float32"
    return check_precision(declared)


__all__ = ["AUTO", "NATIVE_BF16_FLAGS", "native_bf16", "resolve_precision"]
