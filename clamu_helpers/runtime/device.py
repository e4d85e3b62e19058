"""Where a system computes: device names, CUDA determinism, mixed precision.

The exact promise holds on a GPU as on the CPU as long as the retrain of τ_u runs where τ_u
was first trained: same GPU model, CUDA, cuDNN and torch (the environment fingerprint,
:func:`clamu_helpers.runtime.determinism.fingerprint`, records them and unlearning refuses a retrain
where they differ). On CUDA that also needs deterministic kernels:

- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` must be set **before CUDA initialises** (cuBLAS reads it
  once). Importing :mod:`clamu_helpers` sets it when it is unset; :func:`resolve` refuses a
  CUDA device when CUDA was initialised without it, saying how to fix it.
- ``torch.use_deterministic_algorithms(True)`` (inside
  :func:`~clamu_helpers.runtime.determinism.deterministic`), cuDNN deterministic and not benchmarking.
- TF32 off for matmuls and convolutions: TF32 is faster but rounds differently per GPU
  generation, and the fingerprint only pins the GPU model.

Mixed precision: ``FinetuneConfig(precision="bf16")`` runs the forward pass of finetuning, and
of ClAMU's mask optimisation in the same setting, under bfloat16 autocast (parameters,
gradients, optimizer state, scores and τ_t stay float32; evaluation stays float32).
Deterministic too, but other bits than float32: the precision is part of the fingerprint and
of every task-vector cache key. Which precision a profile
runs in on this machine: :mod:`clamu_helpers.runtime.precision`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from ..core.errors import DeviceError

#: what cuBLAS needs for deterministic results (":16:8" also works, with less memory, slower)
CUBLAS_CONFIGS = (":4096:8", ":16:8")
#: finetuning precisions (``FinetuneConfig.precision``)
PRECISIONS = ("float32", "bf16")

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_CONFIGS[0])


def resolve(device: str | torch.device | None) -> torch.device:
    """A concrete ``torch.device`` (``"cuda"`` → ``cuda:<current>``; None → CPU), after checking
    that it exists here and switching CUDA to deterministic, TF32-free kernels."""
    if device is None:
        return torch.device("cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"not a device: {device!r} ({e}); use 'cpu' or 'cuda[:i]'") from None
    if d.type == "cpu":
        return torch.device("cpu")
    if d.type != "cuda":
        raise DeviceError(f"device {str(d)!r} is not supported: use 'cpu' or 'cuda[:i]'")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {str(d)!r} requested but CUDA is not available here "
                          f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use device='cpu'")
    index = torch.cuda.current_device() if d.index is None else d.index
    if not 0 <= index < torch.cuda.device_count():
        raise DeviceError(f"device {str(d)!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    prepare_cuda()
    return torch.device("cuda", index)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (CPU for a module without parameters)."""
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def prepare_cuda() -> None:
    """Deterministic CUDA: cuBLAS workspace, cuDNN deterministic, no benchmarking, no TF32."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in CUBLAS_CONFIGS:
        if torch.cuda.is_initialized():
            raise DeviceError(
                f"CUDA was initialised with CUBLAS_WORKSPACE_CONFIG="
                f"{os.environ.get('CUBLAS_WORKSPACE_CONFIG')!r}, so cuBLAS is not deterministic and "
                f"unlearning could not be exact: export CUBLAS_WORKSPACE_CONFIG={CUBLAS_CONFIGS[0]} before "
                f"starting Python (or import clamu_helpers before anything touches CUDA)")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_CONFIGS[0]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``precision="bf16"``; nothing for float32."""
    if check_precision(precision) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def fork_rng(device: torch.device) -> Iterator[None]:
    """Fork the global RNGs a finetune seeds: the CPU one, and the device's on CUDA (dropout)."""
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def tensor_devices(obj, seen: set[int] | None = None, depth: int = 0) -> set[str]:
    """The devices of every tensor reachable from ``obj`` (attributes, dicts, lists, modules):
    what the device tests check a fitted system against."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 12:
        return set()
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return {str(obj.device)}
    if isinstance(obj, torch.nn.Module):
        return {str(t.device) for t in [*obj.parameters(), *obj.buffers()]}
    out: set[str] = set()
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = list(vars(obj).values())
    else:
        items = []
    for v in items:
        out |= tensor_devices(v, seen, depth + 1)
    return out


__all__ = ["CUBLAS_CONFIGS", "PRECISIONS", "autocast", "check_precision", "fork_rng", "module_device",
           "prepare_cuda", "resolve", "tensor_devices"]
