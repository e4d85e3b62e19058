"""Accuracy and storage of merging, local models and localization (TALL, EMR, ClAMU, cluster merges).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/localization_accuracy.py --tasks 100 --clusters 4 20

Every task is finetuned once (a temporary task-vector store serves later fits), then each
method is fitted and scored on every task's test split (accuracy in the global 30-way label
space, mean over tasks). Prints one row per method with storage in bytes (as the paper counts
it), the ratio to one float32 model, and the fit time. Not a test: numbers, not assertions.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402

from clamu_helpers.settings import get_setting  # noqa: E402
from clamu_helpers.training.store import TaskVectorStore  # noqa: E402
from clamu_helpers.unlearning.system import UnlearningSystem  # noqa: E402


def configs(clusters: list[int], clamu_alphas: list[float]) -> list[tuple[str, dict]]:
    out = [("merge", {}), ("local", {}), ("tall", {}), ("emr", {})]
    out += [("clamu", {"alpha": a}) for a in clamu_alphas]
    for k in clusters:
        out += [("tall", {"clusters": k}), ("emr", {"clusters": k})]
        out += [("clamu", {"clusters": k, "alpha": a}) for a in clamu_alphas]
        out += [("cluster-merge", {"clusters": k, "cluster_by": by}) for by in ("features", "random", "task-vectors")]
    return out


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="images-label-subsets")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", type=int, default=None, help="first N tasks (default: the profile's)")
    ap.add_argument("--clusters", type=int, nargs="*", default=[4, 20])
    ap.add_argument("--clamu-alpha", type=float, nargs="*", default=[1.0, 0.1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="method names to run")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--store", default=None, help="keep task vectors in this folder (default: a temporary one)")
    args = ap.parse_args(argv)
    kw = {} if args.tasks is None else {"tasks": args.tasks}
    setting = get_setting(args.setting, args.profile, seed=args.seed, **kw)
    d = setting.spec.numel
    print(f"{setting.name} [{args.profile}]: T={len(setting.tasks)} tasks, d={d} parameters")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TaskVectorStore(args.store or tmp)
        for method, params in configs(args.clusters, args.clamu_alpha):
            if args.only and method not in args.only:
                continue
            t0 = time.perf_counter()
            system = UnlearningSystem(setting, method, seed=args.seed, store=store, progress=False, **params).fit()
            fit_s = time.perf_counter() - t0
            acc = float(system.evaluate("test")["accuracy"].mean())
            row = {"method": method, **{k: params.get(k) for k in ("clusters", "cluster_by", "alpha")},
                   "accuracy": round(acc, 4), "storage_bytes": system.storage_bytes(),
                   "models": round(system.storage_bytes() / (4 * d), 3),
                   "mask_gradient_steps": system.fit_costs.gradient_steps - len(setting.tasks) * system.steps,
                   "fit_seconds": round(fit_s, 1)}
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(df.to_string(index=False))
    return df


if __name__ == "__main__":
    main()
