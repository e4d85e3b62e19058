"""Finetunes per second on images-label-subsets: serial vs 2 processes vs Ray with 2 workers.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_parallel.py [--profile cpu --tasks 16]

Each backend finetunes the same tasks (one pinned thread per finetune) and must return the
same SHA-256 for every τ_t. Worker start-up (spawn + import + building the setting) is timed
separately: ``warm`` runs a first batch (another seed) before the timed one. Goal: ≥ 1.6×
serial with 2 workers on 2 idle cores. Writes benchmarks/results/bench_parallel.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from clamu_helpers.training.parallel import (WORKER_ENV, SettingRecipe, run_finetunes, shutdown_ray,  # noqa: E402
                                    shutdown_workers)
from clamu_helpers.settings import get_setting  # noqa: E402


def main(profile: str, n: int, workers: int, ray_on: bool) -> dict:
    setting = get_setting("images-label-subsets", profile)
    recipe = SettingRecipe("images-label-subsets", profile, 0)
    ids = setting.task_ids[:n]
    warm_ids = setting.task_ids[n:n + workers] or ids[:workers]
    res = {"profile": profile, "tasks": n, "workers": workers, "steps": setting.finetune_config.steps}
    t = time.perf_counter()
    ref = run_finetunes(setting, ids, seed=0, progress=False)
    res["serial_seconds"] = time.perf_counter() - t
    hashes = {k: v.digest for k, v in ref.items()}
    print(f"serial: {n / res['serial_seconds']:.2f} finetunes/s")
    backends = ["processes"] + (["ray"] if ray_on else [])
    for b in backends:
        try:
            if b == "ray":
                os.environ.setdefault("RAY_raylet_start_wait_time_s", "600")
                os.environ.setdefault("RAY_agent_register_timeout_ms", "600000")
                import ray
                t = time.perf_counter()
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": dict(WORKER_ENV)})
                res["ray_init_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
            run_finetunes(setting, warm_ids, seed=1, backend=b, workers=workers, recipe=recipe, progress=False)
            res[f"{b}_startup_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
            got = run_finetunes(setting, ids, seed=0, backend=b, workers=workers, recipe=recipe, progress=False)
            res[f"{b}_seconds"] = time.perf_counter() - t
            res[f"{b}_same_hashes"] = {k: v.digest for k, v in got.items()} == hashes
            res[f"{b}_speedup"] = res["serial_seconds"] / res[f"{b}_seconds"]
            print(f"{b}: {n / res[f'{b}_seconds']:.2f} finetunes/s = {res[f'{b}_speedup']:.2f}x serial "
                  f"(goal ≥ 1.6x), same bits: {res[f'{b}_same_hashes']}, start-up {res[f'{b}_startup_seconds']:.1f}s")
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            res[f"{b}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"{b}: failed: {res[f'{b}_error']}")
        finally:
            shutdown_workers() if b == "processes" else shutdown_ray()
    save("bench_parallel", res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    main(a.profile, a.tasks, a.workers, not a.no_ray)
