"""Does ClAMU's successive-halving search choose what the full search chooses?

    .venv/bin/python benchmarks/search_agreement.py [--profile cpu] [--seeds 0,1,2] [--clusters 8]

ClAMU chooses α and η on validation data (``clamu_helpers.methods.clamu``): an α round, then an
η round, each candidate optimising the masks of a seeded sample of S clusters. Both run the
comparison rows' protocol (``profiles.CLAMU_PROTOCOL``: one search over per-task masks, the
aggressive halving); ``search="full"`` trains every candidate for E_mask, ``search="halving"``
trains all of them for E_mask/16, the best quarter on to E_mask/4, the best quarter of those to E_mask. This script fits
both on the same tasks — every embedded setting, each seed — and reports how often the chosen
(α, η) agree, the served test accuracy of each (mean over the tasks), their difference with a
95% t interval over the (setting, seed) pairs, and the mask steps each search trained.

The fits use K = ``--clusters`` feature clusters over the setting's first ``--tasks`` tasks
(default: the ``cpu`` notebooks' T per setting), so S = K and the fit is the search alone plus
the chosen masks: the comparison costs what the two searches cost and nothing else. Every
(setting, seed) pair runs as one unit on a one-thread worker (``clamu_helpers.runtime.workers``).
Writes ``benchmarks/results/search_agreement.json`` (``_<profile>`` for other profiles), which
REPORT.md shows under "Measured by benchmarks beside the run" (``reproduce`` writes it; after
running this script, ``python -m clamu_helpers reproduce --report-only`` rewrites REPORT.md).
"""
from __future__ import annotations

import argparse
import time

from _common import save

#: the settings and the task counts of the cpu notebooks (04: 200 images, 100 texts; 03: 50 authors)
SETTINGS = {"images-label-subsets": 200, "fortunes-label-subsets": 100, "reviews-by-movie": 100,
            "fictitious-authors": 50}


def compare(unit: tuple) -> dict:
    """Fit ClAMU with the full and the halving search on one setting and seed."""
    from clamu_helpers import UnlearningSystem, get_setting
    from clamu_helpers.reproduction.profiles import CLAMU_PROTOCOL
    name, profile, seed, n_tasks, clusters = unit
    s = get_setting(name, profile, seed)
    s = s.subset(min(n_tasks, len(s.tasks)))
    out = {"setting": name, "seed": seed, "tasks": len(s.tasks), "clusters": clusters}
    for search in ("full", "halving"):
        t0 = time.perf_counter()
        # the comparison rows' protocol (the search over per-task masks, the aggressive halving), and
        # the same search with every candidate trained to E_mask
        sy = UnlearningSystem(s, "clamu", seed=seed, clusters=clusters, cluster_by="features",
                              **{**CLAMU_PROTOCOL, "search": search}).fit()
        finetune_steps = len(s.tasks) * s.finetune_config.steps
        out[search] = {"alpha": sy.method.chosen["alpha"], "mask_lr": sy.method.chosen["mask_lr"],
                       "accuracy": float(sy.evaluate()[s.metric_name].mean()),
                       "mask_steps": sy.fit_costs.gradient_steps - finetune_steps,
                       "seconds": time.perf_counter() - t0}
    out["agree"] = (out["full"]["alpha"], out["full"]["mask_lr"]) == (out["halving"]["alpha"], out["halving"]["mask_lr"])
    out["difference"] = out["halving"]["accuracy"] - out["full"]["accuracy"]
    return out


def summarise(rows: list[dict]) -> dict:
    from clamu_helpers.reproduction.claims import t_interval
    diff = t_interval([r["difference"] for r in rows])
    steps = sum(r["halving"]["mask_steps"] for r in rows) / sum(r["full"]["mask_steps"] for r in rows)
    return {"pairs": len(rows), "agree": sum(r["agree"] for r in rows),
            "alpha_agree": sum(r["full"]["alpha"] == r["halving"]["alpha"] for r in rows),
            "difference": diff.as_dict(), "difference_text": diff.text(".3f").replace("seeds", "(setting, seed) pairs"),
            "mask_steps_ratio": steps}


def main(profile: str, seeds: list[int], clusters: int, tasks: int | None, settings: list[str]) -> dict:
    from clamu_helpers.reproduction.profiles import available
    from clamu_helpers.runtime.workers import run_units
    names = available(settings)
    units = [(n, profile, sd, tasks or SETTINGS.get(n, 100), clusters) for n in names for sd in seeds]
    rows = run_units(compare, units, desc="search agreement")
    print(f"{'setting':<24} seed  full (α, η)        halving (α, η)     acc full  halving  steps full/halving")
    for r in rows:
        f, h = r["full"], r["halving"]
        print(f"{r['setting']:<24} {r['seed']:>4}  ({f['alpha']:.3g}, {f['mask_lr']:g}){'':<6} "
              f"({h['alpha']:.3g}, {h['mask_lr']:g}){'':<6} {f['accuracy']:.3f}    {h['accuracy']:.3f}    "
              f"{f['mask_steps']} / {h['mask_steps']}")
    summary = summarise(rows)
    print(f"\nchosen (α, η) agree in {summary['agree']} of {summary['pairs']} (α alone: {summary['alpha_agree']}); "
          f"served accuracy, halving − full: {summary['difference_text']}; halving trains "
          f"{summary['mask_steps_ratio']:.2f}× the full search's mask steps")
    result = {"profile": profile, "seeds": seeds, "clusters": clusters, "rows": rows, "summary": summary}
    save("search_agreement" if profile == "cpu" else f"search_agreement_{profile}", result)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=None, help="tasks per setting (default: the cpu notebooks' T)")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    a = ap.parse_args()
    main(a.profile, [int(s) for s in a.seeds.split(",")], a.clusters, a.tasks, a.settings.split(","))
