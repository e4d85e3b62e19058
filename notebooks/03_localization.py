# ---
# jupyter:
#   clamu:
#     targets:
#     - table1
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Localization recovers what merging loses (Table 1, TOFU)
#
# The draft measures *answer generation probability* on TOFU (fictitious authors): each local
# model reaches 1.00, the merged model falls fast as authors are added (GPT2-Small: 0.71 at 2
# authors, 0.06 at 200), TALL and EMR recover a little, and ClAMU's optimized masks recover most
# of it (1.00, 0.94, 0.40, 0.35). Here: the `fictitious-authors` analog — a small causal LM
# pretrained in the project, 20 QA pairs per generated author — with SIFT-Masks added. Every
# served scale is chosen on validation data from one grid (1/T, 0.01, …, 1; the draft writes α = 1
# for ClAMU, which is in the grid), and ClAMU's masks train for as many steps as a finetune; the
# chosen scales are in the second table.

# %% tags=["parameters"]
import os
profile = os.environ.get("CLAMU_PROFILE", "cpu")  # smoke | cpu | paper; committed outputs are from cpu
seed = 0
seeds = None  # None: this notebook's seeds at the profile (clamu_helpers.profiles.seeds_for); claims are judged over them
setting_name = "fictitious-authors"
sizes = None  # None: 2, 5, 50 and the largest author count of the profile

# %%
from clamu_helpers.notebook import *
NOTEBOOK = "03_localization"
seeds = seeds or ex.seeds_for(profile, NOTEBOOK)

# %%
methods = {"Global": ex.COMPARISON["averaging"], "TALL": ex.COMPARISON["TALL"], "EMR": ex.COMPARISON["EMR"],
           "ClAMU": ex.COMPARISON["ClAMU"], "ClAMU supermask (control)": ex.COMPARISON["ClAMU supermask (control)"],
           "SIFT-Masks": ex.COMPARISON["SIFT-Masks"], "Local": ex.COMPARISON["local"]}

table1 = ex.over_seeds(lambda sd: figures.table1(setting_name, profile, sd, methods, sizes), seeds)
metric = get_setting(setting_name, profile, seeds[0]).metric_name
wide = table1.pivot_table(index="tasks", columns="label", values=metric)[list(methods)]
alphas = table1.pivot_table(index="tasks", columns="label", values="alpha")[["TALL", "ClAMU", "SIFT-Masks"]]
plots.save_table(table1, "table1_tofu", profile)
display(Markdown(f"Mean answer probability over {len(seeds)} seeds (per-seed rows in `table1_tofu.csv`); "
                 "served scale α chosen on validation data (Global is averaging, α = 1/T):"), alphas)
wide

# %% [markdown]
# The claim is judged on the **recovery share** (ClAMU − Global) / (Local − Global): how much of
# the local models' lead over the merge ClAMU wins back (the draft's 0.31 at 200 authors). Its
# supermask control gets the same share beside it, and the difference to the best of TALL and EMR
# is kept as a measurement (EMR alone already recovers most of it here, which leaves ClAMU little
# headroom over it).

# %%
recovery = {label: measures.recovery(label, "Global", "Local", metric=metric, at_largest="tasks")
            for label in ("ClAMU", "ClAMU supermask (control)")}
big, small = wide.index.max(), wide.index.min()
share, share_control = (ex.per_seed(table1, recovery[label]) for label in ("ClAMU", "ClAMU supermask (control)"))
control = [a - b for a, b in zip(share, share_control)]
gap = sum(control) / len(control)
rows = [claims.check("table1-recovery", share, label=f"{big} authors",
                     detail=" / ".join(f"{c} {wide.loc[big, c]:.2f}" for c in ("Global", "TALL", "EMR", "ClAMU", "Local"))
                     + f"; supermask control's share {sum(share_control) / len(share_control):.3f}",
                     why=[(abs(gap) < 0.05, f"the supermask control recovers about as much ({gap:+.3f} of the lead): "
                                            "the masks train on the authors' own data more than they recover the merge"),
                          (gap >= 0.05, f"ClAMU recovers {gap:+.3f} of the lead more than its supermask control")]),
        claims.check("table1-degrades", ex.per_seed(table1, measures.growth("Global", metric=metric)), label=f"{small} → {big} authors",
                     detail=f"Global {wide.loc[small, 'Global']:.2f} → {wide.loc[big, 'Global']:.2f}"),
        claims.measurement(f"recovery share: ClAMU − its supermask control at {big} authors (does ClAMU recover the "
                           "merge, or train a supermask?)", control),
        claims.measurement(f"ClAMU − max(TALL, EMR) answer probability at {big} authors (the draft's comparison)",
                           ex.per_seed(table1, measures.lead("ClAMU", "TALL", "EMR", metric=metric, at_largest="tasks")))]
display(plots.report(NOTEBOOK, rows, profile, len(seeds)))
assert (wide["Local"] > wide["Global"]).all()
