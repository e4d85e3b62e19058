"""The ``cpu`` reproduction predicted from unit costs, beside the measured whole run.

    .venv/bin/python benchmarks/time_floor.py [--profile cpu] [--figures figures/cpu] [--units benchmarks/results/flops.json]

1. every ClAMU fit the notebooks make at the profile (:func:`fits`, mirroring notebooks 03, 04,
   05 and 08; 05 counts every fit and refresh of ``experiments.unlearning_orders``), counted with
   the method's own ``Clamu.mask_fits`` in full-budget masks (the successive-halving search
   included): the search, and the masks served;
2. the unit costs of ``benchmarks/bench_flops.py`` (its JSON ``--units``, measured on this
   machine): seconds and FLOPs per mask step of each setting;
3. predicted mask seconds per notebook (mask steps × seconds per step) beside the measured
   "mask optimisation" seconds of its report (its kernel and its seed workers, REPORT.md's
   "Where the time went"): the check that the count explains the measurement;
4. the whole run: every notebook's compute seconds (all categories) beside the run's wall clock
   × cores (``timings.json``'s ``last_full_run``), the packing the CPU slots achieved, and the
   run's measured CPU utilisation;
5. the floor of the masks: their FLOPs ÷ (the machine's measured one-thread peak × cores), each
   setting at the peak of the precision its masks run in (bfloat16 where the profile resolves to it).

Writes ``benchmarks/results/time_floor.json`` (``time_floor_<profile>.json`` for another profile).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import machine, save

ROOT = Path(__file__).resolve().parents[1]
#: wall-clock goals of ``reproduce --profile P`` from an empty cache on 2 cores (minutes; issue 28)
GOAL_MIN = {"smoke": 8, "cpu": 90}


def fits(profile: str) -> list[tuple]:
    """(notebook, setting, setting kwargs, method, params, task counts of every fit or refresh)
    per seed, as the notebooks run them (mirrored from each notebook's source, with the profile's
    knobs; a drift shows as predicted mask seconds far from the measured ones)."""
    from clamu_helpers import experiments as ex, get_setting
    from clamu_helpers.reproduction.profiles import default, take

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


def unit_costs(units: Path) -> dict[str, dict]:
    """Setting → seconds and FLOPs per mask step (``bench_flops.py``'s JSON)."""
    data = json.loads(Path(units).read_text())
    peaks = {d: v["peak_gflops"] for d, v in data["peak"].get("by_dtype", {}).items()}
    out = {}
    for r in data["settings"]:
        if "skipped" in r:
            continue
        row = next(x for x in r["rows"] if x["work"].startswith("mask step"))
        bf16 = r.get("precision") == "bf16"   # a bf16-autocast setting's floor is at the bfloat16 peak
        out[r["setting"]] = {"seconds": r["seconds_per_mask_step"], "flops": r["flops_per_mask_step"],
                             "steps": row["steps"], "precision": r.get("precision", "float32"),
                             "peak_gflops": peaks.get("bfloat16", data["peak"]["peak_gflops"]) if bf16
                             else data["peak"]["peak_gflops"]}
    return {"peak_gflops": data["peak"]["peak_gflops"], "peaks": peaks, "settings": out}


def main(profile: str, figures: Path | None = None, units: Path | None = None) -> dict:
    from clamu_helpers.methods import get_method
    from clamu_helpers.reproduction.profiles import seeds_for

    seeds = len(seeds_for(profile))
    figures = Path(figures or ROOT / "figures" / profile)
    units = Path(units or Path(__file__).parent / "results" / ("flops.json" if profile == "cpu" else f"flops_{profile}.json"))
    cost = unit_costs(units)
    measured = {f.stem: json.loads(f.read_text()).get("time", {}) for f in sorted((figures / "report").glob("*.json"))}
    timings = json.loads((figures / "timings.json").read_text())

    per_nb: dict[str, dict] = {}
    for nb, name, kw, method, params, sizes in fits(profile):
        # the reviews run the same MiniLM layer and head as the fortunes: one unit cost serves both
        unit = cost["settings"].get(name) or cost["settings"].get({"reviews-by-movie": "fortunes-label-subsets"}.get(name, name))
        if unit is None:
            continue
        m = get_method(method, **params)
        e = m.params["mask_steps"] or unit["steps"]      # E_mask: the setting's finetuning steps
        row = per_nb.setdefault(nb, {"masks_optimized": 0.0, "masks_served": 0, "mask_steps": 0.0, "search_steps": 0.0,
                                     "predicted_mask_s": 0.0, "mask_tflop": 0.0, "floor_s": 0.0})
        for n in sizes:
            optimized, served = m.mask_fits(n, e)
            row["masks_optimized"] += optimized * seeds
            row["masks_served"] += served * seeds
            row["mask_steps"] += optimized * e * seeds
            row["search_steps"] += (optimized - served) * e * seeds
            row["predicted_mask_s"] += optimized * e * seeds * unit["seconds"]
            row["mask_tflop"] += optimized * e * seeds * unit["flops"] / 1e12
            row["floor_s"] += optimized * e * seeds * unit["flops"] / 1e9 / unit["peak_gflops"]

    rows, compute = [], 0.0
    for nb in sorted(set(measured) | set(per_nb)):
        t = measured.get(nb, {})
        spent = sum(v for k, v in t.items() if k not in ("wall", "workers"))
        compute += spent
        r = per_nb.get(nb, {})
        rows.append({"notebook": nb, "compute_s": round(spent, 1), "kernel_wall_s": round(t.get("wall", 0.0), 1),
                     "measured_mask_s": round(t.get("mask optimisation", 0.0), 1),
                     **{k: round(v, 1) for k, v in r.items()}})
    run = timings.get("last_full_run") or timings.get("last_run") or {}
    wall, cores = run.get("wall_seconds"), run.get("cpus") or 2
    tflop = sum(r.get("mask_tflop", 0.0) for r in per_nb.values())
    floor_s = sum(r.get("floor_s", 0.0) for r in per_nb.values()) / cores   # each setting at its precision's peak
    result = {"profile": profile, "figures": str(figures), "seeds": seeds, "machine": machine(),
              "units": str(units), "peak_gflops_one_thread": cost["peak_gflops"], "peaks_one_thread": cost["peaks"],
              "precision": {k: v["precision"] for k, v in cost["settings"].items()}, "notebooks": rows,
              "compute_s": round(compute, 1), "run_wall_s": wall, "cores": cores,
              "packing": round(compute / (wall * cores), 3) if wall else None,
              "utilisation": run.get("utilisation"), "mask_tflop": round(tflop, 1),
              "mask_floor_wall_min": round(floor_s / 60, 1), "goal_wall_min": GOAL_MIN.get(profile)}
    save("time_floor" if profile == "cpu" else f"time_floor_{profile}", result)
    print("\n| notebook | compute s | mask s measured | mask s predicted | masks optimized / served | "
          "search share of mask steps | mask TFLOP |\n|---|---|---|---|---|---|---|")
    for r in rows:
        steps = r.get("mask_steps", 0.0)
        share = f"{r.get('search_steps', 0.0) / steps:.0%}" if steps else "–"
        print(f"| {r['notebook']} | {r['compute_s']:.0f} | {r['measured_mask_s']:.0f} | "
              f"{r.get('predicted_mask_s', 0):.0f} | {r.get('masks_optimized', 0):.0f} / {r.get('masks_served', 0):.0f} | "
              f"{share} | {r.get('mask_tflop', 0):.1f} |")
    if wall:
        print(f"\ncompute {compute / 3600:.2f} h in a run of {wall / 60:.1f} min on {cores} cores: the notebooks kept "
              f"{result['packing']:.0%} of the cores computing (measured CPU utilisation "
              f"{run.get('utilisation')}); goal {GOAL_MIN.get(profile)} min")
    print(f"the masks alone: {tflop:.1f} TFLOP, at least {floor_s / 60:.1f} min on {cores} cores at the measured "
          f"one-thread peak of each setting's precision ("
          + ", ".join(f"{d} {v:.1f} GFLOP/s" for d, v in (cost["peaks"] or {"float32": cost["peak_gflops"]}).items()) + ")")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--figures", type=Path, default=None, help="a reproduce output folder (default figures/<profile>)")
    ap.add_argument("--units", type=Path, default=None, help="bench_flops.py's JSON (default results/flops.json)")
    a = ap.parse_args()
    main(a.profile, a.figures, a.units)
