"""Every candidate's validation score in one ClAMU fit's α/η search, in this process's precision.

    CLAMU_PRECISION=float32 .venv/bin/python benchmarks/search_control.py --seed 2
    CLAMU_PRECISION=bf16    .venv/bin/python benchmarks/search_control.py --seed 2

The control behind benchmarks/RESULTS.md, "bfloat16 for every method": Table 5's ClAMU (the
Sent140 analog, label-name head, the first 40 tasks, K = the largest cluster count, random
clusters), with :func:`clamu_helpers.localization.selection.search` wrapped to log (candidate,
mask steps, validation score) each time the search reads one. Prints one JSON object: the
precision, the served row (accuracy, α, η) and the candidates in the order they were scored.
"""
from __future__ import annotations

import argparse
import json


def main(seed: int, setting: str, head: str, tasks: int, clustering: str) -> dict:
    import clamu_helpers.methods.clamu as clamu
    from clamu_helpers import experiments as ex
    from clamu_helpers.settings import get_setting

    log, search = [], clamu.search

    def logged(candidates, score, steps, halving):
        def s(c, b):
            v = score(c, b)
            log.append({"candidate": float(c), "steps": int(b), "val": float(v)})
            return v
        return search(candidates, s, steps, halving)

    clamu.search = logged
    try:
        st = get_setting(setting, "cpu", seed, head=head, progress=False)
        st = st.subset(min(tasks, len(st.tasks)))
        k = ex.cluster_counts(len(st.tasks))[-1]
        ms = {label: (m, {**p, "clusters": k, "cluster_by": clustering}) for label, (m, p) in ex.methods("ClAMU").items()}
        df = ex.compare_methods(st, ms, seed=seed)
    finally:
        clamu.search = search
    cols = [c for c in ("label", "accuracy", "alpha", "served_mask_lr") if c in df.columns]
    return {"precision": st.finetune_config.precision, "seed": seed, "K": k, "rows": df[cols].to_dict("records"),
            "candidates": log}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--setting", default="reviews-by-movie")
    ap.add_argument("--head", default="label-name")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--clustering", default="random", choices=("random", "features"))
    a = ap.parse_args()
    print(json.dumps(main(a.seed, a.setting, a.head, a.tasks, a.clustering)))
