"""Scale the rates measured here to the paper's largest case: 500 tasks × GPT2-XL (1.5B params).

    .venv/bin/python benchmarks/extrapolate.py [--d 1.5e9 --T 500 --disk-GBps 2.0]

Reads benchmarks/results/{bench_ledger,bench_streaming_memory,bench_mask_storage}.json and
writes benchmarks/results/extrapolate.json plus a Markdown table. Assumptions (printed too):
float32 task vectors (4 B/param); the ledger sum is int64 (8 B/param); masks packed at
1 bit/param; a merge reads every τ_t once from the store; a TALL refresh after unlearning
subtracts τ_u from the ledger (no pass 1) then reads every remaining τ_t once more (pass 2);
one CPU core per stream; time = max(compute at the measured params/s, bytes / disk rate).
Scale-out (``--workers``, default 1, 8 and 64): the merge is split into partial ledgers, one
per worker (``stream_merge(..., backend="ray")``), each at the measured one-core rate times the
parallel efficiency measured with 2 workers (bench_distributed_merge.json: speedup / 2; the TALL
refresh with the TALL build's own measured speedup, ``stream_tall_masks(..., backend=...)``),
8 workers per node, each node reading its share at the disk rate, then reduced as a binary
tree: ⌈log2 W⌉ rounds, each sending one int64 partial sum (8 B/param) over the network at
``--net-GBps`` and adding it at the measured int64 rate (taken as the float32 add's).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB"


def main(d: float, T: int, disk: float, net: float = 1.25, workers: tuple = (1, 8, 64)) -> dict:
    led, mem, masks = _load("bench_ledger"), _load("bench_streaming_memory"), _load("bench_mask_storage")
    merge_rate = max((float(v) for v in mem.get("stream_merge_params_per_second", {}).values()), default=None) \
        or led.get("params_per_second", {}).get("ledger_add_incl_digest", 5e7)
    dist = _load("bench_distributed_merge")
    if dist.get("params_per_second_serial"):
        merge_rate = dist["params_per_second_serial"]   # measured with the fused kernel, incl. the τ_t digest
    tall_rate = mem.get("tall_pass2_params_per_second", merge_rate)
    bits = masks.get("max_packed_bits_per_param", 1.0)
    stored = {"global model (float32)": 4 * d, "exact ledger sum (int64)": 8 * d,
              f"{T} masks, packed": T * bits * d / 8, f"{T} local models (float32)": T * 4 * d}
    read_merge = T * 4 * d
    merge_s = max(T * d / merge_rate, read_merge / (disk * 1e9))
    read_tall = (T - 1) * 4 * d
    tall_s = max((T - 1) * d / tall_rate, read_tall / (disk * 1e9))
    # measured at d = 1M: ~3 models = the int64 sum (2 models) + one 1M-value chunk; at
    # d = 1.5B the chunk stays 1M values (4 MiB), so the peak is the int64 sum plus 4 MiB
    chunk_bytes = 4 * (1 << 20)
    peak_models = (8 * d + chunk_bytes) / (4 * d)
    eff = min(1.0, max(dist.get("ray_speedup", 0), dist.get("processes_speedup", 0), 1.0) / 2)
    # the TALL build's pass 2 is shared by tasks (stream_tall_masks(backend=...)): its own measured efficiency
    eff_tall = min(1.0, max(dist.get("tall_ray_speedup", 0), dist.get("tall_processes_speedup", 0), 0.0) / 2) or eff
    add_rate = led.get("params_per_second", {}).get("float32_add", 1e9)
    scale = {}
    for w in workers:
        nodes = -(-w // 8)
        compute = T * d / (merge_rate * (1 if w == 1 else w * eff))
        io = T * 4 * d / (disk * 1e9 * nodes)
        rounds = (w - 1).bit_length()
        reduce_s = rounds * (8 * d / (net * 1e9) + d / add_rate) if w > 1 else 0.0
        t_merge = max(compute, io) + reduce_s
        t_tall = max((T - 1) * d / (tall_rate * (1 if w == 1 else w * eff_tall)), (T - 1) * 4 * d / (disk * 1e9 * nodes))
        scale[w] = {"nodes": nodes, "merge_seconds": t_merge, "reduce_seconds": reduce_s, "tall_refresh_seconds": t_tall}
    res = {"d": d, "T": T, "disk_GBps_assumed": disk, "net_GBps_assumed": net, "merge_params_per_second": merge_rate,
           "parallel_efficiency_measured": eff, "tall_parallel_efficiency_measured": eff_tall,
           "scale_out": scale,
           "tall_pass2_params_per_second": tall_rate, "bytes_stored": stored, "bytes_read_per_merge": read_merge,
           "merge_seconds_one_core": merge_s, "tall_refresh_bytes_read": read_tall,
           "tall_refresh_seconds_one_core": tall_s, "stream_peak_memory_bytes": peak_models * 4 * d,
           "assumptions": __doc__.split("Assumptions (printed too):")[1].strip()}
    lines = [f"| quantity (T = {T}, d = {d:.3g}) | value |", "|---|---|"]
    lines += [f"| stored: {k} | {gb(v)} |" for k, v in stored.items()]
    lines += [f"| bytes read per streamed merge | {gb(read_merge)} |",
              f"| streamed merge, one core at {merge_rate:.3g} params/s, disk {disk} GB/s | {merge_s / 3600:.1f} h |",
              f"| TALL refresh (pass 2 over {T - 1} τ_t at {tall_rate:.3g} params/s) | {tall_s / 3600:.1f} h |",
              f"| peak memory of the streamed merge (~{peak_models:.1f} models) | {gb(peak_models * 4 * d)} |"]
    lines += [f"| merge on {w} worker(s), {v['nodes']} node(s) (extrapolated; reduce {v['reduce_seconds']:.0f} s) | "
              f"{v['merge_seconds'] / 3600:.2f} h |" for w, v in scale.items()]
    lines += [f"| TALL refresh on {w} worker(s) (extrapolated; pass 2 shared by tasks) | "
              f"{v['tall_refresh_seconds'] / 3600:.2f} h |" for w, v in scale.items()]
    table = "\n".join(lines)
    print(table)
    print("\nassumptions:", res["assumptions"])
    res["table_markdown"] = table
    (RESULTS / "extrapolate.json").write_text(json.dumps(res, indent=2))
    (RESULTS / "extrapolate.md").write_text(table + "\n")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=float, default=1.5e9)
    ap.add_argument("--T", type=int, default=500)
    ap.add_argument("--disk-GBps", type=float, default=2.0, help="read bandwidth per node")
    ap.add_argument("--net-GBps", type=float, default=1.25, help="network bandwidth per node (10 GbE = 1.25)")
    ap.add_argument("--workers", default="1,8,64")
    a = ap.parse_args()
    main(a.d, a.T, a.disk_GBps, a.net_GBps, tuple(int(w) for w in a.workers.split(",")))
