"""The streamed merge, TALL and EMR builds of T stored task vectors: serial vs processes vs Ray,
same bits.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_distributed_merge.py [--T 200 --d 4194304]

The merge (``stream_merge``) and, unless ``--merge-only``, the two-pass TALL mask build
(``stream_tall_masks``, one λ) and EMR build (``stream_emr``): pass 1 is the distributed merge,
pass 2 is shared by tasks. Every backend must reproduce the serial result bit for bit (a SHA-256
over the ledger, masks, τ_uni and rescalers).

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

from clamu_helpers.core.params import ParamSpec  # noqa: E402
from clamu_helpers.scaleout.partial import shutdown_pools  # noqa: E402
from clamu_helpers.training.store import TaskVectorStore  # noqa: E402
from clamu_helpers.scaleout.streaming import stream_emr, stream_merge, stream_tall_masks  # noqa: E402
from clamu_helpers.core.taskvector import TaskVector  # noqa: E402


def _digest(*parts) -> str:
    import hashlib
    h = hashlib.sha256()
    for p in parts:
        h.update(p.numpy().tobytes() if isinstance(p, torch.Tensor) else repr(p).encode())
    return h.hexdigest()


def operations(store, keys, spec, masks: bool) -> dict:
    """name → (backend, workers) → digest of the result."""
    ops = {"merge": lambda b, w: stream_merge(store, keys, spec, backend=b, workers=w).digest()}
    if masks:
        def tall(b, w):
            r = stream_tall_masks(store, keys, spec, lambdas=[0.4], backend=b, workers=w)
            return _digest(r.ledger.digest(), *[r.masks[0.4][t] for t in sorted(r.masks[0.4])])

        def emr(b, w):
            e = stream_emr(store, keys, spec, backend=b, workers=w).emr
            return _digest(e.tau_uni, *[e.masks[t] for t in sorted(e.masks)], sorted(e.rescalers.items()))
        ops.update(tall=tall, emr=emr)
    return ops


def main(T: int, d: int, workers: int, repeat: int, ray_on: bool, masks: bool = True) -> dict:
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
        ops = operations(store, keys, spec, masks)
        refs = {name: op("serial", 1) for name, op in ops.items()}
        for name, op in ops.items():
            res[f"{name}_serial_seconds"] = best_of(lambda op=op: op("serial", 1), repeat)
            print(f"T={T} d={d:,} ({res['store_gib']:.1f} GiB stored): {name} serial {res[f'{name}_serial_seconds']:.2f}s")
        res["serial_seconds"] = res["merge_serial_seconds"]
        backends = ["processes"] + (["ray"] if ray_on else [])
        for b in backends:
            if b == "ray":
                os.environ.setdefault("RAY_raylet_start_wait_time_s", "600")
                from clamu_helpers.training.parallel import WORKER_ENV, ray_init
                t = time.perf_counter()
                ray_init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": dict(WORKER_ENV)})
                res["ray_init_seconds"] = time.perf_counter() - t
            t = time.perf_counter()
            stream_merge(store, keys[:workers], spec, backend=b, workers=workers)   # warm-up: workers start
            res[f"{b}_startup_seconds"] = time.perf_counter() - t
            for name, op in ops.items():
                got = op(b, workers)
                if got != refs[name]:
                    raise SystemExit(f"{b} {name}: result {got[:16]}… differs from serial {refs[name][:16]}…")
                sec = best_of(lambda op=op, b=b: op(b, workers), repeat)
                res[f"{name}_{b}_seconds"], res[f"{name}_{b}_speedup"] = sec, res[f"{name}_serial_seconds"] / sec
                print(f"  {name:5s} {b:9s} {sec:.2f}s = {res[f'{name}_{b}_speedup']:.2f}x serial with {workers} "
                      f"workers (goal ≥ 1.6x), same bits")
            res[f"{b}_seconds"], res[f"{b}_speedup"] = res[f"merge_{b}_seconds"], res[f"merge_{b}_speedup"]
            print(f"  ({b} start-up {res[f'{b}_startup_seconds']:.1f}s, timed apart)")
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
    ap.add_argument("--merge-only", action="store_true", help="skip the TALL and EMR builds")
    a = ap.parse_args()
    main(a.T, a.d, a.workers, a.repeat, not a.no_ray, not a.merge_only)
