"""Unlearning cost and accuracy of SIFT-Masks versus the other methods, measured in one run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/unlearning_cost.py \
        --setting images-label-subsets --profile cpu --tasks 100 --k 3 \
        --methods merge local sift sift:scale=count tall emr clamu --json out.json

Fits every method on the same tasks, forgets the same seeded sequence of k tasks one at a time,
audits exactness against a from-scratch fit, and prints one row per method, the ratios of each
method's unlearning cost to SIFT's (gradient steps, parallel steps, wall seconds), and the
draft's counting at this size and at 500 tasks. Methods that are not registered are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pandas as pd  # noqa: E402

from clamu_helpers.methods import METHODS  # noqa: E402
from clamu_helpers.settings import get_setting  # noqa: E402
from clamu_helpers.reproduction.unlearning_cost import (draft_arithmetic, measure_unlearning, parse_method,  # noqa: E402
                                           sift_ratios)

SHOW = ["method", "acc_remaining_before", "acc_remaining", "acc_forgotten", "acc_forgotten_never_trained",
        "exact", "fit_seconds", "unlearn_gradient_steps", "unlearn_parallel_steps", "unlearn_seconds",
        "counted_unlearn_gradient_steps", "storage_bytes"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default="images-label-subsets")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", type=int, default=None, help="use the first n tasks (default: the profile's)")
    ap.add_argument("--k", type=int, default=3, help="tasks to forget, one at a time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=["merge", "local", "sift", "sift:scale=count", "tall", "emr", "clamu"])
    ap.add_argument("--scratch", choices=["measure", "count", "none"], default="measure")
    ap.add_argument("--share-vectors", action="store_true", help="reference fits read τ_t from a temporary store")
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)

    methods = [m for m in args.methods if parse_method(m)[1] in METHODS or parse_method(m)[1] == "scratch"]
    skipped = sorted(set(args.methods) - set(methods))
    if skipped:
        print(f"not registered, skipped: {skipped}", file=sys.stderr)
    setting = get_setting(args.setting, args.profile, args.seed, **({"tasks": args.tasks} if args.tasks else {}))
    df = measure_unlearning(setting, methods, k=args.k, seed=args.seed, tasks=args.tasks,
                            scratch=None if args.scratch == "none" else args.scratch,
                            share_vectors=args.share_vectors, progress=True)
    ratios = sift_ratios(df) if "sift" in set(df["method"]) else pd.DataFrame()
    n = int(df["tasks"].iloc[0])
    draft_here = draft_arithmetic(n, n // 2, steps=setting.finetune_config.steps)
    draft_500 = draft_arithmetic(500, 250, steps=setting.finetune_config.steps)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        print(f"\n{setting.name} ({args.profile}), {n} tasks, forgetting {args.k}: {df['forgotten'].iloc[0]}")
        print(df[SHOW].to_string(index=False))
        if len(ratios):
            print("\nunlearning cost of each method ÷ SIFT's (measured in this run)")
            print(ratios.to_string(index=False))
        print(f"\nthe draft's counting, {n // 2} deletions from {n} tasks and 250 from 500 (steps={setting.finetune_config.steps})")
        cols = ["method", "total", "gradient_steps", "parallel_steps", "sift_ratio_gradient", "sift_ratio_parallel",
                "first_deletion_ratio"]
        print(pd.concat([draft_here, draft_500])[cols].to_string(index=False))
    if args.json:
        out = {"args": vars(args), "setting": setting.describe(), "skipped": skipped,
               "measured": json.loads(df.to_json(orient="records")),
               "ratios": json.loads(ratios.to_json(orient="records")) if len(ratios) else [],
               "draft": json.loads(pd.concat([draft_here, draft_500]).to_json(orient="records"))}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
