"""What a shared α/η search and a more aggressive halving schedule would cost Figure 5.

    .venv/bin/python benchmarks/shared_search.py [--profile cpu] [--seeds 0,1] [--setting fortunes-label-subsets]

Figure 5 (notebook 04) fits ClAMU at every K of ``experiments.cluster_counts(T)`` with feature
and random clusters, and the supermask control with feature clusters; each fit chooses α and η
on validation data over masks of its own clusters (``search_on="clusters"``, the protocol of the
committed figures). Issue 28 allows two cheaper protocols, measured here on the same fits:

* ``tasks``: ``search_on="tasks"``, one search per (setting, seed, task set) over one mask per
  task, shared by every K, both clusterings and the control (which then uses ClAMU's α and η);
* ``tasks+aggressive``: the same, with halving rungs at E_mask/16, /4 and E_mask
  (``halving_reduction=4``, ``halving_min_fraction=1/16``).

For each (seed, protocol) one unit on a one-thread worker makes the notebook's ClAMU fits in
its order and records each fit's chosen (α, η), served test accuracy, gradient steps charged
and seconds. The summary gives, per protocol, the wall seconds of the fits against today's
protocol, how often the chosen (α, η) agree with it, the accuracy difference (fit by fit,
mean with a 95% t interval over seeds), and the Figure 5 control gap (ClAMU − supermask, feature
clusters) under each protocol. Finetunes come from the shared store (``$CLAMU_CACHE``).
Writes ``benchmarks/results/shared_search.json``.
"""
from __future__ import annotations

import argparse
import time

from _common import machine, save

PROTOCOLS = {
    "clusters": {},
    "tasks": {"search_on": "tasks"},
    "tasks+aggressive": {"search_on": "tasks", "halving_reduction": 4, "halving_min_fraction": 1 / 16},
}
#: Figure 5's ClAMU rows (notebook 04): (label, method, clustering)
FITS = (("ClAMU", "clamu", "features"), ("ClAMU supermask (control)", "clamu-supermask", "features"),
        ("ClAMU", "clamu", "random"))


def run(unit: tuple) -> list[dict]:
    """Every Figure 5 ClAMU fit of one seed under one protocol, in the notebook's order."""
    from clamu_helpers import UnlearningSystem, get_setting
    from clamu_helpers.reproduction import experiments as ex
    name, profile, seed, protocol = unit
    s = get_setting(name, profile, seed)
    rows = []
    for k in ex.cluster_counts(len(s.tasks)):
        for label, method, by in FITS:
            if by == "random" and method != "clamu":
                continue
            params = {"clusters": k, "cluster_by": by, **PROTOCOLS[protocol]}
            t0 = time.perf_counter()   # as ex.compare_methods fits and scores it
            system = UnlearningSystem(s, method, seed=seed, store=ex.default_store(), **params).fit()
            accuracy = float(system.evaluate()[s.metric_name].mean())
            rows.append({"setting": name, "seed": seed, "protocol": protocol, "K": k, "clustering": by,
                         "label": label, "accuracy": accuracy, "alpha": float(system.method.chosen["alpha"]),
                         "mask_lr": float(system.method.chosen["mask_lr"]),
                         "fit_gradient_steps": int(system.fit_costs.gradient_steps),
                         "seconds": time.perf_counter() - t0})
    return rows


def summarise(rows: list[dict]) -> dict:
    import pandas as pd

    from clamu_helpers.reproduction.claims import t_interval
    df = pd.DataFrame(rows)
    key = ["seed", "K", "clustering", "label"]
    base = df[df.protocol == "clusters"].set_index(key)
    out = {}
    for protocol, sub in df.groupby("protocol", sort=False):
        joined = sub.merge(base.reset_index(), on=key, suffixes=("", "_base")).set_index(key)
        sub = sub.set_index(key)
        per_seed = (joined.accuracy - joined.accuracy_base).groupby(level="seed").mean().tolist()
        diff = t_interval(per_seed) if len(per_seed) > 1 else None
        feat = sub.xs("features", level="clustering")
        gap = (feat.xs("ClAMU", level="label").accuracy
               - feat.xs("ClAMU supermask (control)", level="label").accuracy).groupby(level="seed").mean()
        out[protocol] = {
            "seconds": float(sub.seconds.sum()), "seconds_ratio": float(sub.seconds.sum() / base.seconds.sum()),
            "fit_gradient_steps": int(sub.fit_gradient_steps.sum()),
            "choice_agrees": int(((joined.alpha == joined.alpha_base) & (joined.mask_lr == joined.mask_lr_base)).sum()),
            "fits": int(len(joined)),
            "accuracy_difference": None if diff is None else diff.as_dict(),
            "accuracy_difference_text": "—" if diff is None else diff.text(".3f"),
            "control_gap_per_seed": [round(float(g), 4) for g in gap],
        }
    return out


def main(profile: str, seeds: list[int], setting: str, rows: list[dict] | None = None, ran_on: dict | None = None) -> dict:
    """Run the units (or take ``rows`` of an earlier run), print and save the summary."""
    from clamu_helpers.runtime.workers import run_units
    if rows is None:
        units = [(setting, profile, sd, p) for sd in seeds for p in PROTOCOLS]
        rows = [r for unit_rows in run_units(run, units, desc="shared search") for r in unit_rows]
    summary = summarise(rows)
    print(f"{'protocol':<18} {'seconds':>8} {'× today':>8} {'same (α, η)':>12}  accuracy − today's          control gap per seed")
    for p, s in summary.items():
        print(f"{p:<18} {s['seconds']:8.0f} {s['seconds_ratio']:8.2f} {s['choice_agrees']:>5} of {s['fits']:<4}  "
              f"{s['accuracy_difference_text']:<26} {s['control_gap_per_seed']}")
    result = {"profile": profile, "setting": setting, "seeds": seeds, "machine": ran_on or machine(), "rows": rows,
              "summary": summary}
    save("shared_search" if profile == "cpu" else f"shared_search_{profile}", result)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--setting", default="fortunes-label-subsets")
    ap.add_argument("--summarise", metavar="JSON", help="summarise the rows of an earlier run's JSON again")
    a = ap.parse_args()
    if a.summarise:
        import json
        old = json.loads(open(a.summarise).read())
        main(old["profile"], old["seeds"], old["setting"], rows=old["rows"], ran_on=old["machine"])
    else:
        main(a.profile, [int(s) for s in a.seeds.split(",")], a.setting)
