"""Measure the embedded text settings (not a test): seconds per finetune, zero-shot / local /
merged (mean, α = 1/T) accuracy on the classification analogs, and answer probability of
local vs merged models on fictitious authors.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/text_settings.py --profile cpu \
        [--only reviews-by-movie:label-name fortunes-label-subsets:cls authors]

Accuracy is pooled over the test texts of the first T tasks, in the global label space.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from clamu_helpers.training.finetune import finetune  # noqa: E402
from clamu_helpers.settings import get_setting  # noqa: E402


def finetune_all(setting, n: int):
    taus, t0 = [], time.perf_counter()
    for task in tqdm(setting.tasks[:n], desc=f"finetune {setting.name}", leave=False):
        taus.append(finetune(setting, task, seed=0).values)
    return taus, (time.perf_counter() - t0) / max(n, 1)


def pooled(setting, weights_of, tasks) -> float:
    """Metric pooled over tasks, weighting each task by its number of test examples."""
    num = den = 0.0
    for i, task in enumerate(tasks):
        x, y = task.test
        num += setting.score(weights_of(i), x, y) * len(y)
        den += len(y)
    return num / den


def classification(name: str, head: str, profile: str, sizes=(10, 50), max_tasks: int | None = None) -> list[dict]:
    s = get_setting(name, profile, head=head)
    largest = min(len(s.tasks), max_tasks or len(s.tasks))
    Ts = sorted({min(t, largest) for t in (*sizes, largest)})
    taus, sec = finetune_all(s, Ts[-1])
    rows = []
    for T in Ts:
        tasks = s.tasks[:T]
        merged = s.theta0 + torch.stack(taus[:T]).mean(0)
        rows.append(dict(setting=name, head=head, T=T, sec_per_finetune=round(sec, 2),
                         zero_shot=round(pooled(s, lambda i: s.theta0, tasks), 3),
                         local=round(pooled(s, lambda i: s.theta0 + taus[i], tasks), 3),
                         merged=round(pooled(s, lambda i: merged, tasks), 3)))
        print(rows[-1], flush=True)
    return rows


def authors(profile: str, sizes=(2, 5, 50), max_tasks: int | None = None) -> list[dict]:
    s = get_setting("fictitious-authors", profile)
    Ts = sorted({min(t, len(s.tasks), max_tasks or len(s.tasks)) for t in sizes})
    taus, sec = finetune_all(s, Ts[-1])
    rows = []
    for T in Ts:
        tasks = s.tasks[:T]
        merged = s.theta0 + torch.stack(taus[:T]).mean(0)
        rows.append(dict(setting="fictitious-authors", T=T, sec_per_finetune=round(sec, 2),
                         m0=round(pooled(s, lambda i: s.theta0, tasks), 3),
                         local=round(pooled(s, lambda i: s.theta0 + taus[i], tasks), 3),
                         merged=round(pooled(s, lambda i: merged, tasks), 3)))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", nargs="*", default=["reviews-by-movie:label-name", "reviews-by-movie:cls",
                                                 "fortunes-label-subsets:label-name", "fortunes-label-subsets:cls",
                                                 "authors"])
    ap.add_argument("--max-tasks", type=int, default=None, help="finetune at most this many tasks")
    args = ap.parse_args()
    for item in args.only:
        if item == "authors":
            authors(args.profile, max_tasks=args.max_tasks)
        else:
            name, head = item.split(":")
            classification(name, head, args.profile, max_tasks=args.max_tasks)


if __name__ == "__main__":
    main()
