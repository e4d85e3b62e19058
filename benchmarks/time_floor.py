"""How fast could ``reproduce --profile cpu`` be without ClAMU's validation search?

    .venv/bin/python benchmarks/time_floor.py [--profile cpu] [--figures figures/cpu] [--repeat 3]

Issue 14 asks for the ``cpu`` profile (3 seeds) in under 60 minutes on 2 cores. REPORT.md's
"Where the time went" measures each notebook kernel's seconds by category; mask optimisation is
most of it. This script splits that category into ClAMU's validation search and the masks that
are served, and asks what is left if the search cost nothing:

1. every ClAMU fit the notebooks make at the profile (:func:`fits`, mirroring notebooks 03, 04,
   05 and 08; 05 counts every fit and refresh of ``experiments.unlearning_orders``), counted
   with the method's own ``Clamu.mask_fits`` (masks optimized, masks served);
2. the seconds of one mask optimisation per setting, measured here (``optimize_mask`` at the
   setting's equal budget; its cost does not depend on the cluster's size, the batches are
   mini-batches);
3. predicted mask seconds per notebook (optimized masks × seconds) beside the measured
   category: the check that the count explains the measurement;
4. the floor: each notebook's measured kernel seconds minus its predicted search seconds
   (finetuning, evaluation, served masks and the rest as measured), and the wall clock of the
   whole profile on 2 cores if the notebooks packed perfectly (sum ÷ 2), beside the goal;
5. the same on an idle machine: where a notebook's measured mask seconds exceed the prediction
   (REPORT.md's ``cpu`` kernels mostly ran beside other jobs), its kernel seconds are divided by
   that factor first (load slows every category alike; a ClAMU fit measured alone on an idle
   machine took the predicted time to 1%).

What it leaves out makes the floor lower than a real run: finetunes that were cached when
REPORT.md was measured (from an empty cache they add time), the search's own validation
scoring (counted under evaluation), and imperfect packing of notebooks on the cores.
Writes ``benchmarks/results/time_floor.json`` (``time_floor_<profile>.json`` for another profile).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _common import machine, save

ROOT = Path(__file__).resolve().parents[1]
#: issue 14's wall-clock goals for ``reproduce --profile P`` from an empty cache on 2 cores (minutes)
GOAL_MIN = {"smoke": 8, "cpu": 60}
#: a notebook's ClAMU masks: counts and predicted seconds (none for a notebook without ClAMU)
NO_MASKS = {"optimized": 0, "served": 0, "optimized_s": 0.0, "served_s": 0.0}


def fits(profile: str) -> list[tuple]:
    """(notebook, setting, setting kwargs, method, params, task counts of every fit or refresh)
    per seed, as the notebooks run them (mirrored from each notebook's source, with the profile's
    knobs; a drift shows as predicted mask seconds far from the measured ones)."""
    from clamu_helpers import experiments as ex, get_setting
    from clamu_helpers.profiles import default, take

    out = []
    # 03, Table 1: ClAMU and its control, per-author masks, at 2, 5, 50 and T authors
    T = len(get_setting("fictitious-authors", profile, 0).tasks)
    sizes = sorted({n for n in (2, 5, 50) if n < T} | {T})
    for m in ("clamu", "clamu-supermask"):
        out.append(("03_localization", "fictitious-authors", {}, m, {}, sizes))
    # 04, Figure 3: per-task masks on every image task; Figure 5: K clusters on fortunes
    T = len(get_setting("images-label-subsets", profile, 0).tasks)
    for m in ("clamu", "clamu-supermask"):
        out.append(("04_clamu", "images-label-subsets", {}, m, {}, [T]))
    T = len(get_setting("fortunes-label-subsets", profile, 0).tasks)
    for k in ex.cluster_counts(T):
        for m, by in (("clamu", "features"), ("clamu", "random"), ("clamu-supermask", "features")):
            out.append(("04_clamu", "fortunes-label-subsets", {}, m, {"clusters": k, "cluster_by": by}, [T]))
    # 05, Table 3: batch requests on n3 tasks; the first fit, order 0's refreshes, the 4 other
    # orders' fresh fits at each checkpoint, and the exactness check's fit of order 0's last set
    name3 = default("table3_setting", profile)
    n3 = len(take(get_setting(name3, profile, 0).tasks, default("table3_tasks", profile)))
    k3 = ex.cluster_counts(n3)[len(ex.cluster_counts(n3)) // 2]
    left = [n3 - k for k in ex.unlearning_schedule(n3) if k]
    for p in ({}, {"clusters": k3, "cluster_by": "features"}):
        out.append(("05_unlearning_costs", name3, {}, "clamu", p, [n3] + left * 5 + left[-1:]))
    # 08, Tables 4 and 5: both heads, random and feature clusters, K = the largest count
    for name in ("fortunes-label-subsets", "reviews-by-movie")[:len(default("appendix_tables", profile))]:
        n = min(40, len(get_setting(name, profile, 0).tasks))
        k = ex.cluster_counts(n)[-1]
        for head in ("cls", "label-name"):
            for by in ("random", "features"):
                out.append(("08_appendix", name, {"head": head}, "clamu", {"clusters": k, "cluster_by": by}, [n]))
    return out


def seconds_per_mask(name: str, kwargs: dict, profile: str, repeat: int) -> float:
    """Fastest of ``repeat`` mask optimisations at the setting's equal budget (ClAMU's defaults)."""
    from clamu_helpers import get_setting
    from clamu_helpers.determinism import generator
    from clamu_helpers.masks import MaskConfig, optimize_mask
    from clamu_helpers.methods import get_method

    s = get_setting(name, profile, 0, **kwargs)
    steps, batch = get_method("clamu").budget(s)
    tau = 1e-3 * torch.randn(s.spec.numel, generator=torch.Generator().manual_seed(0))
    data = s.task(s.task_ids[0]).split("train")
    cfg = MaskConfig(steps, 100.0, batch, 1.0, "draft", s.finetune_config.threads)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        optimize_mask(s, tau, data, cfg, generator(0, "floor"))
        best = min(best, time.perf_counter() - t)
    return best


def main(profile: str, repeat: int, figures: Path | None = None) -> dict:
    from clamu_helpers.methods import get_method
    from clamu_helpers.profiles import seeds_for

    seeds = len(seeds_for(profile))
    figures = Path(figures or ROOT / "figures" / profile)
    measured = {}
    for f in sorted((figures / "report").glob("*.json")):
        measured[f.stem] = json.loads(f.read_text())["time"]
    timings = json.loads((figures / "timings.json").read_text())
    kernel = {r["notebook"]: r["seconds"] for r in timings["notebooks"]}

    units, per_nb = {}, {}
    for nb, name, kw, method, params, sizes in fits(profile):
        key = (name, kw.get("head", "label-name"))
        if key not in units:
            units[key] = seconds_per_mask(name, kw, profile, repeat)
            print(f"one mask optimisation on {name} ({key[1]} head): {units[key]:.2f} s", flush=True)
        m = get_method(method, **params)
        optimized = served = 0
        for n in sizes:
            o, s = m.mask_fits(n)
            optimized, served = optimized + o, served + s
        row = per_nb.setdefault(nb, dict(NO_MASKS))
        row["optimized"] += optimized * seeds
        row["served"] += served * seeds
        row["optimized_s"] += optimized * seeds * units[key]
        row["served_s"] += served * seeds * units[key]

    rows, total_kernel, total_floor, total_idle, idle_kernel = [], 0.0, 0.0, 0.0, 0.0
    for nb, sec in kernel.items():
        t = measured.get(nb, {})
        r = per_nb.get(nb, NO_MASKS)
        search_s = r["optimized_s"] - r["served_s"]
        floor = max(0.0, sec - search_s)
        load = max(1.0, t.get("mask optimisation", 0.0) / r["optimized_s"]) if r["optimized_s"] else 1.0
        idle = max(0.0, sec / load - search_s)
        total_kernel, total_floor, total_idle = total_kernel + sec, total_floor + floor, total_idle + idle
        idle_kernel += sec / load
        rows.append({"notebook": nb, "kernel_s": round(sec, 1),
                     "measured_mask_s": round(t.get("mask optimisation", 0.0), 1),
                     "predicted_mask_s": round(r["optimized_s"], 1), "masks_optimized": r["optimized"],
                     "masks_served": r["served"], "predicted_search_s": round(search_s, 1),
                     "finetuning_s": round(t.get("finetuning", 0.0), 1), "evaluation_s": round(t.get("evaluation", 0.0), 1),
                     "floor_s": round(floor, 1), "load_factor": round(load, 2), "floor_idle_s": round(idle, 1)})
    result = {"profile": profile, "figures": str(figures), "seeds": seeds, "machine": machine(),
              "seconds_per_mask": {f"{n} ({h} head)": round(v, 3) for (n, h), v in units.items()},
              "notebooks": rows, "kernel_s": round(total_kernel, 1), "floor_s": round(total_floor, 1),
              "floor_wall_min_2_cores": round(total_floor / 2 / 60, 1), "kernel_idle_s": round(idle_kernel, 1), "floor_idle_s": round(total_idle, 1),
              "floor_idle_wall_min_2_cores": round(total_idle / 2 / 60, 1), "goal_wall_min": GOAL_MIN.get(profile)}
    save("time_floor" if profile == "cpu" else f"time_floor_{profile}", result)
    print("\n| notebook | kernel s | mask s measured | mask s predicted | masks optimized / served | "
          "search s | floor s | load × | floor s, idle |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['notebook']} | {r['kernel_s']:.0f} | {r['measured_mask_s']:.0f} | {r['predicted_mask_s']:.0f} | "
              f"{r['masks_optimized']} / {r['masks_served']} | {r['predicted_search_s']:.0f} | {r['floor_s']:.0f} | "
              f"{r['load_factor']:.2f} | {r['floor_idle_s']:.0f} |")
    goal = GOAL_MIN.get(profile)
    print(f"\nkernel time {total_kernel / 3600:.2f} h; without the search {total_floor / 3600:.2f} h "
          f"→ at best {total_floor / 2 / 60:.1f} min wall on 2 cores; on an idle machine {idle_kernel / 3600:.2f} h "
          f"({idle_kernel / 2 / 60:.1f} min wall at best), without the search {total_idle / 3600:.2f} h "
          f"→ {total_idle / 2 / 60:.1f} min (goal: {goal} min)")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--figures", type=Path, default=None, help="a reproduce output folder (default figures/<profile>)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    main(a.profile, a.repeat, a.figures)
