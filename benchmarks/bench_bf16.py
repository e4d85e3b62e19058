"""bfloat16 autocast against float32 finetuning on the text and authors settings (issue 28 item 6).

    OMP_WAIT_POLICY=PASSIVE CLAMU_CACHE=... .venv/bin/python benchmarks/bench_bf16.py \
        [--settings reviews-by-movie fortunes-label-subsets fictitious-authors] [--profile cpu] \
        [--tasks 6] [--seeds 0 1] [--repeat 2] [--name bench_bf16]

The question it answers: may a protocol finetune every method's τ_t with
``FinetuneConfig(precision="bf16")`` (bfloat16 autocast of the forward pass; parameters,
gradients, Adam state and τ_t stay float32) on the text and authors settings, i.e. do the local
models stay within 1 point of float32, and what does it save?

For each setting (``get_setting(name, profile, seed)``, its own ``finetune_config``, only
``precision`` changed) and seed, the first ``--tasks`` tasks are finetuned from M0 in float32 and
in bf16 with the same seed, hence the same data order and dropout draws (``finetune`` seeds both
from (seed, task id)), one pinned thread, interleaved (the order alternates task to task) and
``--repeat`` times each. Per task it records:

(a) seconds per finetuning step in both precisions: ``TaskVector.meta["seconds"]`` (the whole
    finetune: copy of M0, the steps, τ_t) / steps, the fastest of the repeats, and the speed-up
    float32 / bf16 of the same task in the same run. A 0-step finetune is timed too (the fixed
    cost inside that figure);
(b) ||τ_bf16 − τ_fp32|| / ||τ_fp32||, and their cosine;
(c) the local model's score, M0 + τ_t on task t's own test split, scored by
    ``setting.score`` as the kit scores local models (``experiments.py``; float32 evaluation):
    float32, bf16 and the difference in points (100 × metric: accuracy for the text settings,
    answer probability for the authors); M0's zero-shot score for scale. Accuracy on a task's
    few test examples moves in steps of 100/n_test points (reviews: 2-9 examples, 11-50 points a
    prediction), so for accuracy the test predictions (argmax) that differ between the two local
    models ("flips") and both models' test cross-entropy are recorded too, and the summary gives
    a 95% t interval of the mean difference;
(d) the sign agreement of τ_t: the share of coordinates where sign(τ_bf16) == sign(τ_fp32).

The speed-up needs native bfloat16 instructions (avx512_bf16 / AMX; recorded under ``cpu``). What a
processor without them gets can be seen by capping the instruction set on this one:
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ... --name bench_bf16_avx2``. Every run first
times a probe, one Linear(384 → 1536) forward + backward on 512 rows in both precisions;
``--settings`` with no names runs the probe alone (e.g. under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``,
AVX-512 without its bf16 instructions).

With ``--repeat`` ≥ 2 it also checks that each precision gives one digest run to run. The
summary per setting gives the median speed-up, the mean and worst |τ| change, the mean score
difference (with its 95% t interval over the tasks × seeds), the largest |difference| and whether
both are within 1 point. Writes ``<out>/<name>.json`` (machine, probe, summaries) and
``<out>/<name>.csv`` (one row per task and seed); ``--out`` defaults to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from clamu_helpers.reproduction.claims import t_interval  # noqa: E402

from clamu_helpers.runtime.device import autocast  # noqa: E402
from clamu_helpers.training.finetune import finetune  # noqa: E402
from clamu_helpers.settings import get_setting  # noqa: E402

SETTINGS = ("reviews-by-movie", "fortunes-label-subsets", "fictitious-authors")
PRECISIONS = ("float32", "bf16")


def cpu_description() -> dict:
    """The processor's model name and whether it has native bfloat16 instructions."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = None
    return {"model_name": model, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "avx512f": "avx512f" in flags, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16_supported": onednn_bf16,
            "isa_caps": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}}


def linear_probe(rounds: int = 5, reps: int = 5) -> dict:
    """ms of one forward + backward of a Linear(384 → 1536) on 512 rows (a MiniLM feed-forward
    product) in float32 and under bf16 autocast, the fastest of ``rounds``: whether this
    processor's bf16 matmul path is fast (oneDNN with native bf16) before any setting is built."""
    g = torch.Generator().manual_seed(0)
    lin, x = torch.nn.Linear(384, 1536), torch.randn(512, 384, generator=g)
    out = {}
    for p in PRECISIONS:
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(reps):
                with autocast(torch.device("cpu"), p):
                    y = lin(x)
                y.float().sum().backward()
            best = min(best, (time.perf_counter() - t) / reps)
        out[f"ms_{p}"] = best * 1e3
    out["speedup"] = out["ms_float32"] / out["ms_bf16"]
    return out


def build(name: str, profile: str, seed: int):
    try:
        setting = get_setting(name, profile, seed, progress=False)
    except TypeError:   # a setting without a progress switch (synthetic)
        setting = get_setting(name, profile, seed)
    setting.theta0   # M0 built (or read from the cache) outside the timings
    return setting


def configs(setting) -> dict:
    base = setting.finetune_config
    return {p: dataclasses.replace(base, precision=p) for p in PRECISIONS}


def overhead(setting, cfgs: dict, seed: int, reps: int = 3) -> dict:
    """Seconds of a 0-step finetune (copy of M0, setup, τ_t), per precision: the fixed cost."""
    task = setting.tasks[0]
    return {p: min(finetune(setting, task, seed, config=dataclasses.replace(cfg, steps=0)).meta["seconds"]
                   for _ in range(reps)) for p, cfg in cfgs.items()}


def score_pair(setting, task, tau32: torch.Tensor, tau16: torch.Tensor) -> dict:
    x, y = task.test
    theta0 = setting.theta0
    w32, w16 = theta0 + tau32, theta0 + tau16
    out = {"n_test": int(len(y)), "m0": setting.score(theta0, x, y),
           "local_float32": setting.score(w32, x, y), "local_bf16": setting.score(w16, x, y)}
    out["diff_points"] = 100.0 * (out["local_bf16"] - out["local_float32"])
    out["gain_points_float32"] = 100.0 * (out["local_float32"] - out["m0"])
    if setting.metric_name == "accuracy":   # finer than accuracy on a few test examples
        z32, z16 = setting.predict(w32, x).float(), setting.predict(w16, x).float()
        out["flips"] = int((z32.argmax(-1) != z16.argmax(-1)).sum())
        out["test_loss_float32"] = float(F.cross_entropy(z32, y.to(z32.device)))
        out["test_loss_bf16"] = float(F.cross_entropy(z16, y.to(z16.device)))
    return out


def compare_task(setting, task, seed: int, cfgs: dict, repeat: int, bf16_first: bool) -> dict:
    order = list(reversed(PRECISIONS)) if bf16_first else list(PRECISIONS)
    seconds = {p: [] for p in PRECISIONS}
    digests = {p: set() for p in PRECISIONS}
    tv = {}
    for _ in range(repeat):
        for p in order:
            tv[p] = finetune(setting, task, seed, config=cfgs[p])
            seconds[p].append(tv[p].meta["seconds"])
            digests[p].add(tv[p].digest)
    a, b = tv["float32"].values, tv["bf16"].values
    steps = cfgs["float32"].steps
    row = {"setting": setting.name, "seed": seed, "task": task.task_id, "steps": steps, "d": int(a.numel())}
    for p in PRECISIONS:
        row[f"s_per_step_{p}"] = min(seconds[p]) / steps
        row[f"s_per_step_{p}_median"] = statistics.median(seconds[p]) / steps
        row[f"digests_{p}"] = len(digests[p])
    row["speedup"] = row["s_per_step_float32"] / row["s_per_step_bf16"]
    row["tau_norm_float32"] = float(a.norm())
    row["tau_rel_change"] = float((b - a).norm() / a.norm())
    row["tau_cosine"] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    row["sign_agreement"] = float((torch.sign(a) == torch.sign(b)).double().mean())
    row.update(score_pair(setting, task, a, b))
    return row


def summarise(rows: list[dict], metric: str, over: dict) -> dict:
    diffs = [r["diff_points"] for r in rows]
    worst = max(rows, key=lambda r: abs(r["diff_points"]))
    out = {
        "metric": metric, "tasks": len(rows),
        "s_per_step_float32_median": statistics.median(r["s_per_step_float32"] for r in rows),
        "s_per_step_bf16_median": statistics.median(r["s_per_step_bf16"] for r in rows),
        "speedup_median": statistics.median(r["speedup"] for r in rows),
        "speedup_min": min(r["speedup"] for r in rows), "speedup_max": max(r["speedup"] for r in rows),
        "zero_step_finetune_s": over,
        "tau_rel_change_mean": statistics.fmean(r["tau_rel_change"] for r in rows),
        "tau_rel_change_min": min(r["tau_rel_change"] for r in rows),
        "tau_rel_change_max": max(r["tau_rel_change"] for r in rows),
        "tau_cosine_min": min(r["tau_cosine"] for r in rows),
        "sign_agreement_mean": statistics.fmean(r["sign_agreement"] for r in rows),
        "sign_agreement_min": min(r["sign_agreement"] for r in rows),
        "m0_mean": statistics.fmean(r["m0"] for r in rows),
        "local_float32_mean": statistics.fmean(r["local_float32"] for r in rows),
        "local_bf16_mean": statistics.fmean(r["local_bf16"] for r in rows),
        "diff_points_mean": statistics.fmean(diffs),
        "diff_points_ci95": list(t_interval(diffs).as_dict()[k] for k in ("lo", "hi")),
        "abs_diff_points_mean": statistics.fmean(abs(d) for d in diffs),
        "abs_diff_points_max": abs(worst["diff_points"]),
        "worst_task": f"seed {worst['seed']} {worst['task']}",
        "tasks_with_any_difference": sum(d != 0 for d in diffs),
        "test_examples_per_task_min": min(r["n_test"] for r in rows),
        "deterministic": all(r["digests_float32"] == 1 and r["digests_bf16"] == 1 for r in rows),
    }
    if "flips" in rows[0]:
        out["flips"] = sum(r["flips"] for r in rows)
        out["test_examples"] = sum(r["n_test"] for r in rows)
        out["test_loss_float32_mean"] = statistics.fmean(r["test_loss_float32"] for r in rows)
        out["test_loss_bf16_mean"] = statistics.fmean(r["test_loss_bf16"] for r in rows)
    out["within_1_point_mean"] = abs(out["diff_points_mean"]) <= 1.0
    out["within_1_point_worst_task"] = out["abs_diff_points_max"] <= 1.0
    return out


def run_setting(name: str, profile: str, seeds, tasks: int, repeat: int) -> tuple[list[dict], dict]:
    rows, over = [], {}
    metric = None
    for seed in seeds:
        setting = build(name, profile, seed)
        metric = setting.metric_name
        cfgs = configs(setting)
        for p in PRECISIONS:   # warm-up, untimed: first-call allocations and oneDNN primitives
            finetune(setting, setting.tasks[0], seed, config=cfgs[p])
        over[f"seed {seed}"] = overhead(setting, cfgs, seed)
        for i, task in enumerate(setting.tasks[:tasks]):
            row = compare_task(setting, task, seed, cfgs, repeat, bf16_first=bool(i % 2))
            rows.append(row)
            print(f"{name} seed {seed} {task.task_id}: {row['s_per_step_float32'] * 1e3:.1f} vs "
                  f"{row['s_per_step_bf16'] * 1e3:.1f} ms/step ({row['speedup']:.2f}x), |Δτ|/|τ| "
                  f"{row['tau_rel_change']:.4f}, signs {row['sign_agreement']:.4f}, {metric} "
                  f"{row['local_float32']:.4f} -> {row['local_bf16']:.4f} ({row['diff_points']:+.2f} pt)"
                  + (f", {row['flips']}/{row['n_test']} flips" if "flips" in row else ""), flush=True)
    return rows, summarise(rows, metric, over)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), help="none: the linear probe only")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", type=int, default=6, help="the first N tasks of each setting")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--repeat", type=int, default=2, help="finetunes per task and precision (fastest is timed)")
    ap.add_argument("--name", default="bench_bf16", help="results file stem")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results/)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cpu = cpu_description()
    probe = linear_probe()
    print(f"cpu {cpu}\nlinear probe: float32 {probe['ms_float32']:.1f} ms, bf16 {probe['ms_bf16']:.1f} ms "
          f"({probe['speedup']:.2f}x)", flush=True)
    rows, summary, skipped = [], {}, {}
    for name in args.settings:
        try:
            r, s = run_setting(name, args.profile, args.seeds, args.tasks, args.repeat)
        except Exception as e:   # a setting whose data or weights are missing here: say so, go on
            skipped[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        rows += r
        summary[name] = s
        print(f"== {name}: speed-up median {s['speedup_median']:.2f}x (min {s['speedup_min']:.2f}), |Δτ|/|τ| mean "
              f"{s['tau_rel_change_mean']:.4f} (max {s['tau_rel_change_max']:.4f}), signs mean "
              f"{s['sign_agreement_mean']:.4f}, {s['metric']} diff mean {s['diff_points_mean']:+.2f} pt "
              f"[{s['diff_points_ci95'][0]:+.2f}, {s['diff_points_ci95'][1]:+.2f}], max "
              f"|diff| {s['abs_diff_points_max']:.2f} pt ({s['worst_task']}); within 1 point: mean "
              f"{s['within_1_point_mean']}, worst task {s['within_1_point_worst_task']}", flush=True)
    result = {"machine": machine(), "threads": 1, "cpu": cpu, "linear_probe": probe, "args": vars(args),
              "seconds": time.perf_counter() - t0, "summary": summary, "skipped": skipped,
              "rows": f"{args.name}.csv" if rows else None}   # the per-task rows: the CSV beside it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out / f'{args.name}.json'}")
    if rows:
        path = out / f"{args.name}.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {path}")
    return 0 if rows or not args.settings else 1


if __name__ == "__main__":
    sys.exit(main())
