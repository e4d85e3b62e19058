"""Determinism: stable seeds, explicit generators, pinned threads, environment fingerprint.

Retraining τ_u must reproduce it bit for bit. CPU results depend on the thread count, on
library versions and on the processor (ATen, MKL and oneDNN pick AVX2, AVX-512 or AMX kernels
by what it supports, and MKL by its vendor), so every finetune runs inside :func:`deterministic`
and every result carries :func:`fingerprint`. Seeds come from SHA-256, never from Python's
salted ``hash()``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import platform
import re
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
    CUDA ``device`` also deterministic cuDNN/cuBLAS and no TF32 (:mod:`clamu_helpers.runtime.device`)."""
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


#: /proc/cpuinfo flags that decide which kernels ATen, MKL and oneDNN dispatch to (x86 ``flags``,
#: ARM ``Features``); the fingerprint records the ones the processor has, nothing else.
KERNEL_FLAGS = frozenset({
    "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "bf16", "i8mm",
})


def parse_cpuinfo(text: str) -> tuple[str | None, list[str] | None]:
    """(vendor, sorted kernel-deciding flags of :data:`KERNEL_FLAGS`) from the text of
    /proc/cpuinfo; the first processor stands for all. ARM has no ``vendor_id``: its ``CPU
    implementer`` code (0x41: Arm) stands in; no flags line gives None."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    vendor = fields.get("vendor_id") or (f"arm:{fields['CPU implementer']}" if "CPU implementer" in fields else None)
    raw = fields.get("flags", fields.get("Features"))
    flags = sorted(KERNEL_FLAGS.intersection(raw.split())) if raw is not None else None
    return vendor, flags


def _cpuinfo() -> tuple[str | None, list[str] | None]:
    """:func:`parse_cpuinfo` of this machine; (None, None) where /proc/cpuinfo cannot be read
    (macOS, Windows): ATen's CPU capability still tells the kernel family there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return None, None


@functools.lru_cache(maxsize=None)
def cpu_kernels() -> dict:
    """The CPU kernel family torch will use here, for :func:`fingerprint`: ATen's CPU capability
    (``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``, ``"SVE256"``...), the processor's vendor and its
    kernel-deciding instruction-set flags (None where /proc/cpuinfo is unavailable), the BLAS
    torch was built with (name and MKL version) and oneDNN's version (None when off). Short and
    stable: no model names, clock speeds or core counts. Fixed for a process, so cached."""
    vendor, flags = _cpuinfo()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):   # torch without the query
        capability = None
    config = torch.__config__.show()
    blas = m.group(1) if (m := re.search(r"BLAS_INFO=(\w+)", config)) else None
    if blas == "mkl" and (m := re.search(r"Math Kernel Library Version ([\w.]+)", config)):
        blas = f"mkl {m.group(1)}"
    onednn = None
    if torch.backends.mkldnn.is_available():
        m = re.search(r"(?:MKL-DNN|oneDNN) v([\w.]+)", config)
        onednn = m.group(1) if m else "available"
    return {"cpu_capability": capability, "cpu_vendor": vendor, "cpu_flags": flags, "blas": blas, "onednn": onednn}


def fingerprint(threads: int = 1, device: str | torch.device = "cpu", dtype: str = "float32") -> dict:
    """What a bit-exact retrain depends on; recorded with every task vector and result.

    ``device``: where finetuning runs. On the CPU the kernel family is added
    (:func:`cpu_kernels`: ATen's CPU capability, the processor's vendor and instruction-set
    flags, BLAS and oneDNN versions): another processor may pick other kernels and give other
    bits. On CUDA the GPU model, the CUDA and cuDNN versions are added (a retrain on another GPU
    model or CUDA may give other bits). ``dtype``: the finetuning precision
    (``FinetuneConfig.precision``: "float32" or "bf16")."""
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
    if torch.device(device).type == "cpu":
        info.update(cpu_kernels())
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
    """Fields whose values differ: name → (saved, here).

    Only the fields the saved (recorded) fingerprint holds are compared: a field missing from it
    is not a mismatch, because whoever wrote it did not record that field (task vectors, stores
    and states written before the CPU kernel fields of :func:`cpu_kernels` existed; a CPU
    fingerprint has no GPU fields, and its ``device`` differs anyway). A recorded field missing
    here is a mismatch (value None here)."""
    return {k: (saved[k], here.get(k)) for k in sorted(saved) if saved[k] != here.get(k)}
