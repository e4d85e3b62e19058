"""Ledger add throughput vs a float32 in-place add and vs a memory copy of the same bytes.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_ledger.py [--d 16777216 --T 16]

Prints ratios measured in this one run and writes benchmarks/results/bench_ledger.json.
Two ledger paths are timed: ``add`` one task at a time, and ``add_many`` (all T in one pass
over τ̄, what building a system uses). Each ledger is allocated and its pages touched outside
the timed region, as the float32 accumulator is. The default d = 16M (64 MiB per τ_t) is
larger than the L3 cache, as real models are. One task at a time, the ledger must move
≥ 20 bytes per parameter (read 4 of τ_t, read and write 8 of the int64 sum) where a float32
add moves 12 and a copy 8: the bandwidth floor is ~1.7× a float32 add. ``add_many``
amortises the int64 traffic over the batch (floor: 4 bytes per parameter per task).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import best_of, save  # noqa: E402

import torch  # noqa: E402

from clamu_helpers import ledger_kernel  # noqa: E402
from clamu_helpers.core.ledger import MergeLedger  # noqa: E402
from clamu_helpers.core.params import ParamSpec  # noqa: E402
from clamu_helpers import digests  # noqa: E402
from clamu_helpers.core.taskvector import TaskVector  # noqa: E402


def reference_add(total: torch.Tensor, v: torch.Tensor, bits: int = 40) -> None:
    """The ledger's original formula: checks, float64 copy, scale, round, int64, add."""
    assert bool(torch.isfinite(v).all()) and float(v.abs().max()) < 2 ** 10
    total += v.to(torch.float64).mul_(2.0 ** bits).round_().to(torch.int64)


def hash_functions() -> dict:
    """Cryptographic hashes of a float32 vector's bytes, the candidates for τ_t's digest."""
    import hashlib

    def raw(v):
        return v.view(torch.uint8).numpy()

    out = {"sha256": lambda v: hashlib.sha256(raw(v)).hexdigest(),
           "blake2b-256": lambda v: hashlib.blake2b(raw(v), digest_size=32).hexdigest()}
    try:
        import blake3
        out["blake3"] = lambda v: blake3.blake3(raw(v)).hexdigest()
        out["blake3-2threads"] = lambda v: blake3.blake3(raw(v), max_threads=2).hexdigest()
    except ImportError:
        pass
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(2)

    def sha256_tree(v, parts=2):   # SHA-256 of the SHA-256s of `parts` slices, hashed side by side
        b = raw(v)
        n = -(-b.size // parts)
        leaves = pool.map(lambda i: hashlib.sha256(b[i * n:(i + 1) * n]).digest(), range(parts))
        return hashlib.sha256(b"".join(leaves)).hexdigest()

    out["sha256-tree-2threads"] = sha256_tree
    return out


def main(d: int, T: int, repeat: int) -> dict:
    torch.set_num_threads(1)
    spec = ParamSpec(("tau",), ((d,),))
    g = torch.Generator().manual_seed(0)
    vecs = [torch.randn(d, generator=g) * 1e-3 for _ in range(T)]
    tvs = [TaskVector(f"t{i}", v, spec) for i, v in enumerate(vecs)]
    for tv in tvs:
        tv.digest  # digest computed once, outside the timed region
    dst = torch.empty(d)
    acc = torch.zeros(d)

    t_copy = best_of(lambda: [dst.copy_(v) for v in vecs], repeat)
    t_f32 = best_of(lambda: [acc.add_(v) for v in vecs], repeat)

    def ledger_run():
        led = MergeLedger(spec)
        for tv in tvs:
            led.add(tv.task_id, tv)
        return led

    def timed(add) -> float:
        """Best wall time of ``add(ledger)`` on a fresh, pre-touched ledger."""
        times = []
        for _ in range(repeat):
            led = MergeLedger(spec)
            led._sum.zero_()  # page faults outside the timed region
            t0 = time.perf_counter()
            add(led)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_alloc = best_of(lambda: MergeLedger(spec)._sum.zero_(), max(2, repeat // 2))
    kernels = {}
    for kernel in (("numba", "torch") if ledger_kernel.available() else ("torch",)):
        os.environ["CLAMU_LEDGER_KERNEL"] = kernel
        ledger_run()   # compile / warm up outside the timed region
        kernels[kernel] = {"add": timed(lambda led: [led.add(tv.task_id, tv) for tv in tvs]),
                           "add_many": timed(lambda led: led.add_many((tv.task_id, tv) for tv in tvs)),
                           "sum": ledger_run().state()[0]["ledger_sum"]}
    os.environ.pop("CLAMU_LEDGER_KERNEL", None)
    fused = kernels.get("numba", kernels["torch"])
    t_led, t_many = fused["add"], fused["add_many"]
    assert all(torch.equal(k["sum"], kernels["torch"]["sum"]) for k in kernels.values()), "fused kernel differs"
    many = MergeLedger(spec)
    many.add_many((tv.task_id, tv) for tv in tvs)
    assert torch.equal(many.state()[0]["ledger_sum"], ledger_run().state()[0]["ledger_sum"]), "add_many differs from add"
    ref_sum = torch.zeros(d, dtype=torch.int64)
    t_ref = best_of(lambda: [reference_add(ref_sum.zero_(), v) for v in vecs], repeat)
    # bit-identity of the optimized path with the float64 formula
    ref_sum.zero_()
    for v in vecs:
        reference_add(ref_sum, v)
    assert torch.equal(ledger_run().state()[0]["ledger_sum"], ref_sum), "optimized ledger differs from float64 formula"
    t_hash = best_of(lambda: [TaskVector(tv.task_id, tv.values, spec).digest for tv in tvs], max(1, repeat // 2))
    hashes = {name: best_of(lambda fn=fn: [fn(v) for v in vecs], max(1, repeat // 2)) / T
              for name, fn in hash_functions().items()}
    t_f32_one = t_f32 / T
    chunks = {}
    old = MergeLedger.CHUNK
    for c in (1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 20):
        MergeLedger.CHUNK = c
        chunks[c] = {"add": timed(lambda led: [led.add(tv.task_id, tv) for tv in tvs]),
                     "add_many": timed(lambda led: led.add_many((tv.task_id, tv) for tv in tvs))}
    MergeLedger.CHUNK = old

    n = d * T
    copy_gbs = 8 * n / t_copy / 1e9
    res = {
        "d": d, "T": T, "threads": 1,
        "seconds": {"copy": t_copy, "float32_add": t_f32, "ledger_add": t_led, "ledger_add_many": t_many,
                    "ledger_alloc_and_touch": t_alloc,
                    "ledger_add_float64_formula": t_ref, "digest_of_inputs": t_hash},
        "digest_algorithm": digests.DEFAULT,
        "ledger_chunk_seconds": {str(k): v for k, v in chunks.items()},
        "params_per_second": {"float32_add": n / t_f32, "ledger_add": n / t_led, "ledger_add_many": n / t_many,
                              "ledger_add_incl_digest": n / (t_led + t_hash)},
        "ratio_ledger_vs_float32_add": t_led / t_f32,
        "ratio_ledger_add_many_vs_float32_add": t_many / t_f32,
        "ratio_ledger_incl_digest_vs_float32_add": (t_led + t_hash) / t_f32,
        "ratio_digest_vs_float32_add": t_hash / t_f32,
        "ratio_float64_formula_vs_float32_add": t_ref / t_f32,
        "speedup_vs_float64_formula": t_ref / t_led,
        "copy_bandwidth_GBps": copy_gbs,
        "ledger_bandwidth_fraction": (20 * n / t_led / 1e9) / copy_gbs,
        "ledger_add_many_bandwidth_fraction": ((4 * n + 16 * d) / t_many / 1e9) / copy_gbs,
        "float32_add_bandwidth_fraction": (12 * n / t_f32 / 1e9) / copy_gbs,
        "bit_identical_to_float64_formula": True,
        "kernels": {k: {"add": v["add"], "add_many": v["add_many"], "ratio_add_vs_float32_add": v["add"] / t_f32,
                        "ratio_add_many_vs_float32_add": v["add_many"] / t_f32} for k, v in kernels.items()},
        "kernel_bit_identical_to_torch_path": True,
        "hash_seconds_per_vector": hashes,
        "hash_ratio_vs_float32_add_of_it": {k: v / t_f32_one for k, v in hashes.items()},
    }
    print(f"d={d} T={T}, one thread, best of {repeat}")
    print(f"  copy              {t_copy:.4f}s  ({copy_gbs:.1f} GB/s counting read+write)")
    print(f"  float32 add       {t_f32:.4f}s")
    print(f"  ledger add        {t_led:.4f}s  = {res['ratio_ledger_vs_float32_add']:.2f}x float32 add "
          f"one at a time; {res['ledger_bandwidth_fraction']:.0%} of copy bandwidth at 20 B/param")
    print(f"  ledger add_many   {t_many:.4f}s  = {res['ratio_ledger_add_many_vs_float32_add']:.2f}x float32 add "
          f"(goal ≤ 3x), all {T} tasks in one pass; bit-identical to add")
    print(f"  (allocating and touching a ledger: {t_alloc:.4f}s, not in the times above)")
    print(f"  float64 formula   {t_ref:.4f}s  = {res['ratio_float64_formula_vs_float32_add']:.2f}x "
          f"(optimized path {res['speedup_vs_float64_formula']:.2f}x faster, bit-identical)")
    print(f"  + {digests.DEFAULT} digest of τ_t  {t_hash:.4f}s ({t_hash / t_f32:.2f}x float32 add) -> ledger incl. "
          f"hashing {res['ratio_ledger_incl_digest_vs_float32_add']:.2f}x float32 add")
    for k, v in res["kernels"].items():
        print(f"  kernel {k:6s}     add {v['ratio_add_vs_float32_add']:.2f}x, add_many "
              f"{v['ratio_add_many_vs_float32_add']:.2f}x float32 add (goal ≤ 2.0x; floor 1.67x for add)")
    for k, v in res["hash_ratio_vs_float32_add_of_it"].items():
        print(f"  hash {k:18s} {hashes[k] * 1e3:7.1f} ms per τ_t = {v:5.2f}x a float32 add of it (goal ≤ 2x)")
    print("  chunk sizes (add, add_many):", {k: (round(v["add"], 4), round(v["add_many"], 4)) for k, v in chunks.items()})
    save("bench_ledger", res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=1 << 24)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    main(a.d, a.T, a.repeat)
