"""Unlearning compute measured at growing T, SIFT-Masks against the merging baselines.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_unlearning_compute.py \
        --setting images-label-subsets --profile cpu --sizes 50 100 200 500 --ks 1 10% --seed 0

The notebook 06 measures T ∈ {50, 100, 200} over the profile's seeds; this adds T = 500, the
paper's largest merge (the cpu image setting built with 500 tasks). For each T and method it
fits once, forgets k seeded tasks in one request, and records the gradient steps, parallel steps
and seconds the system executed, and the storage it needs; then each method's ratio to
SIFT-Masks and the fit log ratio = a + b log T (its exponent b and its value at 500). Exactness
is audited at the smallest T. Writes ``benchmarks/results/bench_unlearning_compute.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import save  # noqa: E402

from clamu_helpers import unlearning_cost as uc  # noqa: E402
from clamu_helpers.settings import get_setting  # noqa: E402

METHODS = ["sift:scale=val", "tall", "tall:vectors=keep", "emr", "emr:vectors=keep", "clamu:alpha=1,mask_lr=100"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default="images-label-subsets")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    ap.add_argument("--ks", nargs="+", default=["1", "10%"])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="bench_unlearning_compute", help="results/<name>.json")
    args = ap.parse_args(argv)
    ks = [k if k.endswith("%") else int(k) for k in args.ks]
    setting = get_setting(args.setting, args.profile, args.seed, tasks=max(args.sizes))
    t0 = time.perf_counter()
    cost = uc.unlearning_compute(setting, args.methods, args.sizes, ks=ks, seed=args.seed, progress=True)
    ratios = uc.compute_ratios(cost, reference=args.methods[0])
    growth = uc.ratio_growth(ratios)
    print(cost[["method", "tasks", "k", "unlearn_finetunes", "unlearn_gradient_steps", "unlearn_parallel_steps",
                "unlearn_seconds", "storage_bytes", "exact"]].to_markdown(index=False, floatfmt=".3g"))
    print()
    print(ratios.to_markdown(index=False, floatfmt=".3g"))
    print()
    print(growth.to_markdown(index=False, floatfmt=".3g"))
    save(args.name, {"args": vars(args), "seconds": time.perf_counter() - t0,
                                      "cost": cost.to_dict("records"), "ratios": ratios.to_dict("records"),
                                      "growth": growth.to_dict("records")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
