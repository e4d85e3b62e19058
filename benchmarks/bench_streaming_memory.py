"""Peak memory of the streamed merge vs stacking all task vectors, at several T.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_streaming_memory.py [--d 1048576 --T 10 100 500]

Writes T synthetic τ_t (d float32 values each) into a temporary store, then measures in a
fresh child process per case the peak RSS above the process's baseline after imports
(``resource.getrusage().ru_maxrss``): ``stream`` = ``streaming.stream_merge`` (exact ledger),
``stack`` = load all, ``torch.stack`` then ``sum``. Also times the streamed merge and a TALL
pass 2 (for ``extrapolate.py``). Writes benchmarks/results/bench_streaming_memory.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

import torch  # noqa: E402

from clamu_helpers.core.params import ParamSpec  # noqa: E402
from clamu_helpers.training.store import TaskVectorStore  # noqa: E402
from clamu_helpers.core.taskvector import TaskVector  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def child(mode: str, root: str, keys: list[str], d: int) -> dict:
    torch.set_num_threads(1)
    from clamu_helpers.scaleout.streaming import stream_merge, stream_tall_masks
    spec = ParamSpec(("tau",), ((d,),))
    store = TaskVectorStore(root)
    base = _rss_mib()
    t = time.perf_counter()
    out = {}
    if mode == "stream":
        led = stream_merge(store, keys, spec)
        out["digest"] = led.digest()
    elif mode == "stack":
        total = torch.stack([store.get(k, spec).values for k in keys]).sum(0)
        out["checksum"] = float(total.double().sum())
    elif mode == "tall":
        led = stream_merge(store, keys, spec)
        t = time.perf_counter()
        stream_tall_masks(store, keys, spec, lambdas=0.4, ledger=led, save=True)
    out.update(seconds=time.perf_counter() - t, baseline_mib=base, peak_mib=_rss_mib(),
               extra_mib=_rss_mib() - base)
    return out


def main(d: int, Ts: list[int], root: Path) -> dict:
    spec = ParamSpec(("tau",), ((d,),))
    store = TaskVectorStore(root)
    keys = []
    t = time.perf_counter()
    for i in range(max(Ts)):
        v = torch.randn(d, generator=torch.Generator().manual_seed(i)) * 1e-3
        k = store.mask_key("bench-tv", d, i)
        store.put(k, TaskVector(f"t{i}", v, spec))
        keys.append(k)
    print(f"wrote {max(Ts)} vectors of d={d} in {time.perf_counter() - t:.1f}s")
    model_mib = 4 * d / 2 ** 20
    rows = []
    cases = [(m, T) for T in Ts for m in ("stream", "stack", "tall")]
    for mode, T in cases:
        arg = json.dumps({"mode": mode, "root": str(root), "keys": keys[:T], "d": d})
        p = subprocess.run([sys.executable, __file__, "--child", arg], capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r.update(mode=mode, T=T, extra_models=r["extra_mib"] / model_mib)
        rows.append(r)
        print(f"  {mode:6s} T={T:4d}: +{r['extra_mib']:8.1f} MiB = {r['extra_models']:6.2f} models, {r['seconds']:.2f}s")
    stream = {r["T"]: r for r in rows if r["mode"] == "stream"}
    stack = {r["T"]: r for r in rows if r["mode"] == "stack"}
    tall = {r["T"]: r for r in rows if r["mode"] == "tall"}
    res = {"d": d, "model_mib": model_mib, "rows": rows,
           "stream_extra_models_by_T": {T: stream[T]["extra_models"] for T in Ts},
           "stack_extra_models_by_T": {T: stack[T]["extra_models"] for T in Ts},
           "stream_growth_ratio_Tmax_vs_Tmin": stream[max(Ts)]["extra_mib"] / max(stream[min(Ts)]["extra_mib"], 1e-9),
           "stack_over_stream_at_Tmax": stack[max(Ts)]["extra_mib"] / max(stream[max(Ts)]["extra_mib"], 1e-9),
           "stream_merge_params_per_second": {T: T * d / stream[T]["seconds"] for T in Ts},
           "tall_extra_models_by_T": {T: tall[T]["extra_models"] for T in Ts},
           "tall_growth_ratio_Tmax_vs_Tmin": tall[max(Ts)]["extra_mib"] / max(tall[min(Ts)]["extra_mib"], 1e-9),
           "tall_pass2_params_per_second": max(T * d / tall[T]["seconds"] for T in Ts)}
    print(f"streamed merge: peak grows {res['stream_growth_ratio_Tmax_vs_Tmin']:.2f}x from T={min(Ts)} to "
          f"T={max(Ts)} (goal: flat); stacking needs {res['stack_over_stream_at_Tmax']:.1f}x more at T={max(Ts)}; "
          f"TALL masks (both passes, saved to the store) grow {res['tall_growth_ratio_Tmax_vs_Tmin']:.2f}x")
    save("bench_streaming_memory", res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=1 << 20)
    ap.add_argument("--T", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--root", type=str, default=None, help="store folder (default: a temporary one, removed)")
    ap.add_argument("--child", type=str, default=None)
    a = ap.parse_args()
    if a.child:
        c = json.loads(a.child)
        print(json.dumps(child(c["mode"], c["root"], c["keys"], c["d"])))
    else:
        tmp = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="clamu-bench-"))
        try:
            main(a.d, sorted(a.T), tmp)
        finally:
            if a.root is None:
                shutil.rmtree(tmp, ignore_errors=True)
