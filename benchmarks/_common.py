"""Shared helpers of the benchmarks: machine description, timing, JSON results."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    import torch
    return {"cpus": os.cpu_count(), "memory_gib": round(mem / 2 ** 30, 1), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "loadavg_at_start": load,
            "note": "shared 2-core box: other jobs ran at the same time; numbers are noisy"}


def best_of(fn, repeat: int = 5) -> float:
    """Fastest wall time of ``repeat`` calls (the least disturbed by other jobs)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")
    return path
