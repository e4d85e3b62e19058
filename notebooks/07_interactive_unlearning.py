# ---
# jupyter:
#   clamu:
#     targets:
#     - demo
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Interactive unlearning
#
# Pick tasks to forget (each named by its data set and labels), a method and a number of
# clusters, press **Forget**, and watch per-task accuracy, storage, what the request cost and the
# exactness audit (the served digest after unlearning against a system fitted from scratch
# without every task forgotten so far) update. Forgetting is **cumulative**: the first request
# of a method fits its system (a progress line says which, with a bar over its finetunes), and
# every later one is one unlearning of that kept system; the table under the widget lists the
# requests so far. Run it in JupyterLab for the widgets; headless runs (papermill, CI) replay two
# requests so the outputs below exist.

# %% tags=["parameters"]
import os
profile = os.environ.get("CLAMU_PROFILE", "cpu")  # smoke | cpu | paper; committed outputs are from cpu
seed = 0
setting_name = "images-label-subsets"
max_tasks = 24

# %%
from clamu_helpers.notebook import *
from clamu_helpers.demo import UnlearningDemo

# %%
setting = get_setting(setting_name, profile, seed)
setting = setting.subset(min(max_tasks, len(setting.tasks)))
demo = UnlearningDemo(setting, seed=seed)
demo.widget()

# %%
# two requests, as two clicks make them (replayed so the notebook has outputs when run headlessly)
first = demo.forget(setting.task_ids[:2], method="sift")
second = demo.forget(setting.task_ids[2:3], method="sift")
pd.Series({k: v for k, v in second.items() if k != "accuracy"})

# %%
# NBVAL_CHECK_OUTPUT
# (CI compares what this cell prints with the committed output: the verdict must not change)
print("both requests exact (served digest = a fit from scratch without the forgotten tasks):",
      first["exact"] and second["exact"])

# %%
demo.history_frame()
