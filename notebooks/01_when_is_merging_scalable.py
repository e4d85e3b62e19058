# ---
# jupyter:
#   clamu:
#     targets:
#     - fig2
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · When is model merging scalable? (Figure 2)
#
# The draft merges up to 500 models in four settings and finds that **data heterogeneity**
# decides: in (i) CLIP with uniform tasks merging improves over the individual models, in (ii)
# CLIP with label-subset tasks and (iv) Reddit it quickly degrades to zero-shot, and in (iii)
# Sent140 it stabilises at non-trivial utility. Here: the same curves on the embedded analogs —
# score of M0 + τ̄/T on the first T tasks, beside the T local models and zero-shot M0 — over
# several seeds (each seed samples the tasks and finetunes anew; bars are 95% t intervals).
# Each claim is judged on its interval (`clamu_helpers.claims`): (i) on the paper's own words,
# merged *above* local.

# %% tags=["parameters"]
import os
profile = os.environ.get("CLAMU_PROFILE", "cpu")  # smoke | cpu | paper; committed outputs are from cpu
seed = 0
seeds = None  # None: this notebook's seeds at the profile (clamu_helpers.profiles.seeds_for); claims are judged over them
settings = ["images-uniform", "images-label-subsets", "reviews-by-movie", "fortunes-label-subsets"]

# %%
from clamu_helpers.notebook import *
NOTEBOOK = "01_when_is_merging_scalable"
seeds = seeds or ex.seeds_for(profile, NOTEBOOK)

# %%
available = profiles.available(settings)
print("settings:", available, "| not available here:", sorted(set(settings) - set(available)), "| seeds:", seeds)
fig2 = ex.over_seeds(lambda sd: pd.concat([ex.merging_at_scale(get_setting(name, profile, sd), seed=sd)
                                           for name in available], ignore_index=True), seeds)
fig = plots.merging_at_scale(fig2)
plots.save_figure(fig, "fig2_merging_at_scale", profile)
plots.save_table(fig2, "fig2_merging_at_scale", profile)
fig2.pivot_table(index=["setting", "tasks"], columns="model", values="accuracy").round(3)

# %%
rows = []
for name in available:
    sub = fig2[fig2.setting == name]
    key, quantity = measures.FIGURE2[name]  # the quantity each setting's claim is judged on
    last = sub[sub.tasks == sub.tasks.max()].groupby("model")["accuracy"].mean()
    m, l, z = last["merged"], last["local"], last["zero-shot"]
    why = [(name == "images-uniform" and l > m,
            f"the local models ({l:.3f}) stay above the merge ({m:.3f}): each uniform task here already "
            f"covers every label, so averaging adds little data and only interference")]
    rows.append(claims.check(key, ex.per_seed(sub, quantity), label=f"{name}, T={int(sub.tasks.max())}",
                             detail=f"merged {m:.3f}, local {l:.3f}, zero-shot {z:.3f}", why=why))
    if name in ("images-uniform", "reviews-by-movie"):  # the settings the draft names: CLIP (i) and Sent140
        rows.append(claims.check("fig2-within-15", ex.per_seed(sub, measures.lead("merged", "local", by="model", at_largest="tasks")),
                                 label=f"{name}, T={int(sub.tasks.max())}", detail=f"merged {m:.3f}, local {l:.3f}"))
display(plots.report(NOTEBOOK, rows, profile, len(seeds)))
assert fig2["accuracy"].between(0, 1).all()
label = fig2[fig2.setting == "images-label-subsets"].pivot_table(index=["seed", "tasks"], columns="model", values="accuracy")
# finetuning never hurts, and helps on average at every size (a task whose M0 already scores at its
# ceiling ties: seed 5, T = 1 has zero-shot = local = 0.94)
assert (label["local"] >= label["zero-shot"]).all() and (label.groupby("tasks").mean().pipe(lambda m: m["local"] > m["zero-shot"])).all()
