"""Mask storage in bits per parameter: packed (≤ 1) and zlib-compressed (below 1 where sparse).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_mask_storage.py [--tasks 6]

Random masks at several densities, and real-ish masks from the synthetic setting made wide
(SIFT masks m_t = 1{τ_t ≠ 0} from sign-fixed finetunes, and TALL masks at λ = 0.4 over the
same tasks' plain finetunes). Every mask is round-tripped before it is counted.
Writes benchmarks/results/bench_mask_storage.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

import torch  # noqa: E402

from clamu_helpers.core.ledger import MergeLedger  # noqa: E402
from clamu_helpers.localization.masks import tall_masks  # noqa: E402
from clamu_helpers.core.packing import bits_per_parameter, compress, decompress, pack, unpack  # noqa: E402
from clamu_helpers.training.parallel import run_finetunes  # noqa: E402
from clamu_helpers.settings.synthetic import SyntheticSetting  # noqa: E402


def row(kind: str, m: torch.Tensor) -> dict:
    d = m.numel()
    assert torch.equal(unpack(pack(m), d), m) and torch.equal(decompress(compress(m), d), m)
    r = {"kind": kind, "d": d, "density": float(m.float().mean()),
         "packed_bits_per_param": bits_per_parameter(m), "compressed_bits_per_param": bits_per_parameter(m, True)}
    print(f"  {kind:28s} density {r['density']:.3f}: packed {r['packed_bits_per_param']:.3f}, "
          f"compressed {r['compressed_bits_per_param']:.3f} bits/param")
    return r


def main(n_tasks: int) -> dict:
    rows = []
    g = torch.Generator().manual_seed(0)
    d = 1 << 20
    for p in (0.5, 0.1, 0.01, 0.001):
        rows.append(row(f"random p={p}", torch.rand(d, generator=g) < p))
    s = SyntheticSetting(tasks=n_tasks, dim=64, hidden=256, classes=10)
    sign = torch.where(torch.rand(s.spec.numel, generator=g) < 0.5, -1.0, 1.0)
    sift = run_finetunes(s, s.task_ids, seed=0, sign=sign, progress=False)
    plain = run_finetunes(s, s.task_ids, seed=0, progress=False)
    tau_bar = MergeLedger.from_vectors(plain.values()).tau_bar()
    for tid in s.task_ids[:3]:
        rows.append(row(f"SIFT mask {tid}", sift[tid].values != 0))
        rows.append(row(f"TALL λ=0.4 {tid}", tall_masks(plain[tid].values, tau_bar, 0.4)))
    res = {"rows": rows, "max_packed_bits_per_param": max(r["packed_bits_per_param"] for r in rows),
           "synthetic_d": s.spec.numel}
    save("bench_mask_storage", res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=6)
    main(ap.parse_args().tasks)
