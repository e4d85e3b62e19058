"""Write the numbered notebooks from the cell sources below (the notebooks' source of truth).

Run ``python scripts/build_notebooks.py`` after editing a notebook here, then
``python -m clamu_helpers reproduce --profile cpu`` to refresh the committed outputs.
Notebooks stay thin: a parameters cell, a few library calls, a figure or table, and a
sentence on what the paper found and what this run shows.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"

PARAMS = '''import os
profile = os.environ.get("CLAMU_PROFILE", "cpu")  # smoke | cpu | paper (papermill injects it)
seed = 0'''

SETUP = '''%matplotlib inline
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import pandas as pd
from IPython.display import Markdown, display
from clamu_helpers import UnlearningSystem, get_setting
from clamu_helpers import experiments as ex, plots
pd.set_option("display.precision", 3)'''


def md(s):
    return new_markdown_cell(s.strip())


def code(s, tags=()):
    c = new_code_cell(s.strip())
    if tags:
        c.metadata["tags"] = list(tags)
    return c


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["00_quickstart"] = [
    md("""
# 00 · Quickstart: finetune, merge, serve, unlearn — exactly

The whole loop of *exact unlearning by model merging* on the embedded default (real images
that install offline, a small pretrained MLP as M0):

1. finetune M0 separately and deterministically on each task t, giving τ_t = M_t − M0;
2. merge τ̄ = Σ_t τ_t in an exact ledger and serve M0 + τ̄/T;
3. to forget task u, retrain τ_u alone, check its hash, subtract it;
4. audit: the result is **bit-identical** to a merge that never saw u.
"""),
    code(PARAMS + '\nsetting_name = "images-label-subsets"', tags=["parameters"]),
    code(SETUP),
    code('''setting = get_setting(setting_name, profile, seed)
pd.Series(setting.describe())'''),
    md("## Finetune every task, merge, and compare with the local models"),
    code('''merged = UnlearningSystem(setting, "merge", seed=seed, store=ex.default_store()).fit()
local = UnlearningSystem(setting, "local", seed=seed, store=ex.default_store()).fit()
zero_shot = sum(setting.score(setting.theta0, *t.test) for t in setting.tasks) / len(setting.tasks)
summary = pd.DataFrame([
    {"model": "zero-shot M0", "accuracy": zero_shot, "storage (MB)": 4 * setting.spec.numel / 1e6},
    {"model": "merged M0 + τ̄/T", "accuracy": merged.evaluate()["accuracy"].mean(), "storage (MB)": merged.storage_bytes() / 1e6},
    {"model": "local M0 + τ_t", "accuracy": local.evaluate()["accuracy"].mean(), "storage (MB)": local.storage_bytes() / 1e6},
])
summary'''),
    code('''acc = dict(zip(summary["model"], summary["accuracy"]))
assert acc["local M0 + τ_t"] > acc["merged M0 + τ̄/T"] > 0.3, acc  # label subsets: merging loses accuracy
display(Markdown(
    f"On {len(setting.tasks)} label-subset tasks the local models reach **{acc['local M0 + τ_t']:.2f}**, "
    f"the merged model **{acc['merged M0 + τ̄/T']:.2f}** and M0 **{zero_shot:.2f}**: merging many "
    f"heterogeneous tasks gives back most of what finetuning won — the paper's setting (ii) falls to "
    f"zero-shot the same way. Later notebooks win it back with masks and clusters."))'''),
    md("## Unlearn one task, and check it is exact"),
    code('''forget = setting.task_ids[1]
before = merged.served_digest()
report = merged.unlearn([forget])
scratch = UnlearningSystem(setting, "merge", seed=seed, store=ex.default_store()).fit(
    [t for t in setting.task_ids if t != forget])
print("forgot:", forget, "| retrained hash matched the merged one:", report["retrain_hashes_match"])
print("served digest after unlearning:", merged.served_digest())
print("served digest from scratch:    ", scratch.served_digest())
assert merged.served_digest() == scratch.served_digest() != before'''),
    md("""
The unlearned system and a system that never saw the task serve **the same bits**. That is
possible because τ̄ lives in a fixed-point integer ledger (float32 addition is not
associative, so a float sum would differ in the last bits), and because retraining is
deterministic: same data, seed, hyperparameters, thread count and library versions.
"""),
    md("## The audit, as a user would run it"),
    code('''from clamu_helpers.audit import audit
result = audit(setting, "merge", unlearn=3, seed=seed)
assert result["exact"] and result["retrain_hashes_match"]
{k: result[k] for k in ("exact", "digest_unlearned", "digest_from_scratch", "unlearned", "seconds")}'''),
    md("The same check runs from the shell: `python -m clamu_helpers audit --setting images-label-subsets --profile smoke --unlearn 3`."),
]

NOTEBOOKS["01_when_is_merging_scalable"] = [
    md("""
# 01 · When is model merging scalable? (Figure 2)

The draft merges up to 500 models in four settings and finds that **data heterogeneity**
decides: in (i) CLIP with uniform tasks merging improves over the individual models, in (ii)
CLIP with label-subset tasks and (iv) Reddit it quickly degrades to zero-shot, and in (iii)
Sent140 it stabilises at non-trivial utility. Here: the same curves on the embedded analogs —
score of M0 + τ̄/T on the first T tasks, beside the T local models and zero-shot M0.
"""),
    code(PARAMS + '''
settings = ["images-uniform", "images-label-subsets", "reviews-by-movie", "fortunes-label-subsets"]''',
         tags=["parameters"]),
    code(SETUP + '''
from clamu_helpers.settings import SETTINGS, availability'''),
    code('''available = [s for s in settings if s in SETTINGS and availability(s)[0]]
print("settings:", available, "| not available here:", sorted(set(settings) - set(available)))
frames = [ex.merging_at_scale(get_setting(name, profile, seed), seed=seed) for name in available]
fig2 = pd.concat(frames, ignore_index=True)
fig = plots.merging_at_scale(fig2)
plots.save_figure(fig, "fig2_merging_at_scale", profile)
plots.save_table(fig2, "fig2_merging_at_scale", profile)
fig2.pivot_table(index=["setting", "tasks"], columns="model", values="accuracy").round(3)'''),
    code('''claims = {
    "images-uniform": ("(i) uniform tasks: merging keeps up with the individual models", "improves over local",
                       lambda m, l, z: m >= l - 0.05),
    "images-label-subsets": ("(ii) label subsets: merging degrades toward zero-shot", "falls to zero-shot",
                             lambda m, l, z: (m - z) < 0.5 * (l - z)),
    "reviews-by-movie": ("(iii) Sent140 analog: merging stabilises above zero-shot", "stabilises, non-trivial",
                         lambda m, l, z: m > z),
    "fortunes-label-subsets": ("(iv) Reddit analog: merging degrades toward zero-shot", "falls to zero-shot",
                               lambda m, l, z: (m - z) < 0.5 * (l - z)),
}
rows, text = [], []
for name in available:
    sub = fig2[fig2.setting == name]
    T = int(sub.tasks.max())
    last = sub[sub.tasks == T].set_index("model")["accuracy"]
    m, l, z = last["merged"], last["local"], last["zero-shot"]
    claim, paper, holds = claims[name]
    ok = bool(holds(m, l, z))
    rows.append({"claim": claim, "paper": paper, "reproduces": ok,
                 "ours": f"T={T}: merged {m:.3f}, local {l:.3f}, zero-shot {z:.3f}"})
    text.append(f"- **{name}** at T={T}: merged {m:.3f}, local {l:.3f}, zero-shot {z:.3f} — "
                + ("the trend reproduces." if ok else "the trend does **not** reproduce here."))
plots.report_rows("01_when_is_merging_scalable", rows, profile)
display(Markdown("**What this run shows** (paper: merging helps in (i), stabilises in (iii), collapses "
                 "toward zero-shot in (ii) and (iv)):\\n\\n" + "\\n".join(text)))
assert fig2["accuracy"].between(0, 1).all()
label = fig2[fig2.setting == "images-label-subsets"]
assert label[label.model == "local"]["accuracy"].min() > label[label.model == "zero-shot"]["accuracy"].max()'''),
]



def build(names=None) -> list[Path]:
    NB.mkdir(exist_ok=True)
    written = []
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        path = NB / f"{name}.ipynb"
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build(sys.argv[1:] or None):
        print("wrote", p.relative_to(ROOT))
