"""The teaching demo behind ``notebooks/07_interactive_unlearning.ipynb`` (ipywidgets).

``UnlearningDemo(setting).forget(ids, method, clusters)`` is what one click does: fit the
method, unlearn ``ids``, fit a second system from scratch without them, and return accuracy
before/after per task, storage, unlearning cost and the audit (equal served digests).
``widget()`` wraps it in task/method/cluster pickers and a button.
"""
from __future__ import annotations

import pandas as pd

from .errors import ClamuError
from .experiments import default_store
from .methods import METHODS
from .settings.base import Setting
from .system import UnlearningSystem

#: the methods offered (every registered method, SIFT-Masks first; controls last)
DEMO_METHODS = tuple(sorted(METHODS, key=lambda m: (METHODS[m].control_of is not None, m != "sift", m)))
#: those that take a number of clusters
CLUSTERED = tuple(m for m in DEMO_METHODS if METHODS[m].clustered)


class UnlearningDemo:
    def __init__(self, setting: Setting, seed: int = 0):
        self.setting, self.seed = setting, seed

    def _system(self, method: str, clusters: int | None) -> UnlearningSystem:
        params = {"clusters": clusters} if clusters and method in CLUSTERED else {}
        return UnlearningSystem(self.setting, method, seed=self.seed, store=default_store(), **params)

    def forget(self, task_ids, method: str = "sift", clusters: int | None = None) -> dict:
        ids = [str(t) for t in task_ids]
        if not ids or len(set(ids)) >= len(self.setting.task_ids):
            raise ValueError(f"pick between 1 and {len(self.setting.task_ids) - 1} of the "
                             f"{len(self.setting.task_ids)} tasks to forget (got {len(set(ids))})")
        if method not in DEMO_METHODS:
            raise ValueError(f"unknown method {method!r}; the demo offers {', '.join(DEMO_METHODS)}")
        system = self._system(method, clusters).fit()
        before = system.evaluate().set_index("task_id")[self.setting.metric_name]
        system.unlearn(ids)
        after = system.evaluate().set_index("task_id")[self.setting.metric_name]
        scratch = self._system(method, clusters).fit([t for t in self.setting.task_ids if t not in ids])
        remaining = [t for t in self.setting.task_ids if t not in ids]
        return {"method": method, "clusters": clusters, "forgotten": ids,
                "exact": system.served_digest() == scratch.served_digest(),
                "digest_unlearned": system.served_digest()[:16], "digest_from_scratch": scratch.served_digest()[:16],
                "storage_bytes": system.storage_bytes(), "gradient_steps": system.unlearn_costs.gradient_steps,
                "parallel_steps": system.unlearn_costs.parallel_steps,
                "unlearn_seconds": round(system.unlearn_costs.seconds, 3),
                "remaining_before": float(before[remaining].mean()), "remaining_after": float(after[remaining].mean()),
                "forgotten_before": float(before[ids].mean()), "forgotten_after": float(after[ids].mean()),
                "accuracy": pd.DataFrame({"before": before, "after": after})}

    def widget(self):
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        tasks = w.SelectMultiple(options=self.setting.task_ids, value=tuple(self.setting.task_ids[:1]),
                                 description="forget", rows=8)
        method = w.Dropdown(options=DEMO_METHODS, value="sift", description="method")
        clusters = w.IntSlider(value=0, min=0, max=max(2, len(self.setting.tasks) // 2),
                               description="clusters", tooltip="0: one mask per task")
        button = w.Button(description="Forget", button_style="danger")
        out = w.Output()

        def click(_):
            out.clear_output()
            with out:
                try:
                    r = self.forget(tasks.value, method.value, clusters.value or None)
                except (ValueError, ClamuError) as e:  # a bad pick gets a sentence, not a traceback
                    print(f"cannot forget that: {e}")
                    return
                fig, ax = plt.subplots(figsize=(7, 2.6))
                r["accuracy"].plot.bar(ax=ax, width=0.8)
                ax.set_ylabel(self.setting.metric_name)
                ax.tick_params(axis="x", labelsize=6)
                plt.show()
                display(pd.Series({k: v for k, v in r.items() if k != "accuracy"}).to_frame("value"))
                print("exact unlearning:", "yes, digests equal" if r["exact"] else "NO")

        button.on_click(click)
        self.controls = {"tasks": tasks, "method": method, "clusters": clusters, "button": button, "out": out}
        return w.VBox([w.HBox([tasks, w.VBox([method, clusters, button])]), out])
