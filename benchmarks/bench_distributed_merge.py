"""The streamed merge of T stored task vectors: serial vs processes vs Ray, same digest.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_distributed_merge.py [--T 200 --d 4194304]

Writes T random τ_t (float32, d parameters) into a store in a temporary folder, then merges
them with ``stream_merge`` serially and with ``backend="processes"`` and ``"ray"`` (``workers``
shares merged into partial ledgers side by side, combined by the driver). Every backend must
give the serial digest. Worker start-up is timed apart (a warm-up merge of a few vectors runs
first, as a long-lived service would have its workers up). Goal: ≥ 1.6× serial with 2 workers
on 2 idle cores. Writes benchmarks/results/bench_distributed_merge.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, machine, save  # noqa: E402

import torch  # noqa: E402

from clamu_helpers.params import ParamSpec  # noqa: E402
from clamu_helpers.partial import shutdown_pools  # noqa: E402
from clamu_helpers.store import TaskVectorStore  # noqa: E402
from clamu_helpers.streaming import stream_merge  # noqa: E402
from clamu_helpers.taskvector import TaskVector  # noqa: E402


def main(T: int, d: int, workers: int, repeat: int, ray_on: bool) -> dict:
    torch.set_num_threads(1)
    spec = ParamSpec(("tau",), ((d,),))
    root = Path(tempfile.mkdtemp(prefix="clamu_bench_merge_"))
    try:
        store, keys, g = TaskVectorStore(root), [], torch.Generator().manual_seed(0)
        t = time.perf_counter()
        for i in range(T):
            k = store.mask_key("bench-merge", i)
            store.put(k, TaskVector(f"t{i:03d}", torch.randn(d, generator=g) * 1e-3, spec))
            keys.append(k)
        res = {"T": T, "d": d, "workers": workers, "store_gib": T * d * 4 / 2 ** 30,
               "write_seconds": time.perf_counter() - t, "machine": machine()}
        ref = stream_merge(store, keys, spec).digest()
        res["serial_seconds"] = best_of(lambda: stream_merge(store, keys, spec), repeat)
        print(f"T={T} d={d:,} ({res['store_gib']:.1f} GiB stored): serial {res['serial_seconds']:.2f}s")
        backends = ["processes"] + (["ray"] if ray_on else [])
        for b in backends:
            if b == "ray":
                os.environ.setdefault("RAY_raylet_start_wait_time_s", "600")
                from clamu_helpers.parallel import WORKER_ENV, ray_init
                t = time.perf_counter()
                ray_init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": dict(WORKER_ENV)})
                res["ray_init_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
            stream_merge(store, keys[:workers], spec, backend=b, workers=workers)   # warm-up: workers start
            res[f"{b}_startup_seconds"] = time.perf_counter() - t
            digest = stream_merge(store, keys, spec, backend=b, workers=workers).digest()
            if digest != ref:
                raise SystemExit(f"{b}: digest {digest[:16]}… differs from serial {ref[:16]}…")
            res[f"{b}_seconds"] = best_of(lambda b=b: stream_merge(store, keys, spec, backend=b, workers=workers),
                                          repeat)
            res[f"{b}_speedup"] = res["serial_seconds"] / res[f"{b}_seconds"]
            print(f"  {b:9s} {res[f'{b}_seconds']:.2f}s = {res[f'{b}_speedup']:.2f}x serial with {workers} "
                  f"workers (goal ≥ 1.6x), same digest; start-up {res[f'{b}_startup_seconds']:.1f}s apart")
        res["digests_equal"] = True
        res["params_per_second_serial"] = T * d / res["serial_seconds"]
    finally:
        shutdown_pools()
        if ray_on:
            try:
                import ray
                ray.shutdown()
            except ImportError:
                pass
        shutil.rmtree(root, ignore_errors=True)
    save("bench_distributed_merge", res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--d", type=int, default=1 << 22)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    main(a.T, a.d, a.workers, a.repeat, not a.no_ray)
