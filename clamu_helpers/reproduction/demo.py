"""The teaching demo behind ``notebooks/07_interactive_unlearning.ipynb`` (ipywidgets).

``UnlearningDemo(setting).forget(ids, method, clusters)`` is one "right to be forgotten"
request: the system serving with that method (fitted on first use, then kept, so forgetting is
cumulative and a request costs one unlearning) forgets ``ids``; the audit fits a second system
from scratch without every task forgotten so far and compares the served digests. It returns
accuracy before/after per task, storage, what the request cost, the audit's verdict and the
request's receipt, and adds a row to :attr:`UnlearningDemo.history`. ``widget()`` wraps it in a task picker (each
task named by what it holds), method and cluster pickers, a button, a progress line and the
history table.
"""
from __future__ import annotations

import copy
from typing import Callable

import pandas as pd

from ..core.errors import ClamuError, UnknownTaskError
from .experiments import default_store
from ..methods import METHODS
from ..settings.base import Setting, Task
from ..unlearning.system import UnlearningSystem

#: the methods offered (every registered method, SIFT-Masks first; controls last)
DEMO_METHODS = tuple(sorted(METHODS, key=lambda m: (METHODS[m].control_of is not None, m != "sift", m)))
#: those that take a number of clusters
CLUSTERED = tuple(m for m in DEMO_METHODS if METHODS[m].clustered)


def task_name(task: Task) -> str:
    """What a task holds, for a person picking it: id, source (data set, movie, categories or
    author) and its labels where the source does not already name them."""
    name = f"{task.task_id} · {task.source}" if task.source else task.task_id
    if task.labels and "+" not in task.source:
        name += " · labels " + ", ".join(str(lab) for lab in task.labels)
    return name


class UnlearningDemo:
    """Requests against kept systems, one per (method, clusters), with their history."""

    def __init__(self, setting: Setting, seed: int = 0, audit: bool = True):
        self.setting, self.seed, self.audit = setting, seed, audit
        self.systems: dict[tuple[str, int | None], UnlearningSystem] = {}
        self.history: list[dict] = []

    def task_names(self) -> dict[str, str]:
        """Each task id → :func:`task_name`."""
        return {t.task_id: task_name(t) for t in self.setting.tasks}

    def _key(self, method: str, clusters: int | None) -> tuple[str, int | None]:
        if method not in DEMO_METHODS:
            raise ValueError(f"unknown method {method!r}; the demo offers {', '.join(DEMO_METHODS)}")
        return method, (int(clusters) if clusters and method in CLUSTERED else None)

    def _new(self, key, progress: bool) -> UnlearningSystem:
        method, clusters = key
        params = {"clusters": clusters} if clusters else {}
        return UnlearningSystem(self.setting, method, seed=self.seed, store=default_store(),
                                progress=progress, **params)

    def system(self, method: str = "sift", clusters: int | None = None,
               say: Callable[[str], None] = print, progress: bool = True) -> UnlearningSystem:
        """The system serving with ``method`` (and ``clusters``), fitted on first use and kept."""
        key = self._key(method, clusters)
        if key not in self.systems:
            say(f"fitting {method}{f' with {key[1]} clusters' if key[1] else ''} on "
                f"{len(self.setting.tasks)} tasks (once; later requests reuse it)")
            self.systems[key] = self._new(key, progress).fit()
        return self.systems[key]

    def forgotten(self, method: str = "sift", clusters: int | None = None) -> list[str]:
        """The tasks forgotten so far by the system of ``method`` (empty before its first request)."""
        sys_ = self.systems.get(self._key(method, clusters))
        return list(sys_.unlearned) if sys_ else []

    def forget(self, task_ids, method: str = "sift", clusters: int | None = None,
               say: Callable[[str], None] = print, progress: bool = False) -> dict:
        """Forget ``task_ids`` in the kept system of ``method``; audit it against a fit from scratch."""
        ids = [str(t) for t in task_ids]
        key = self._key(method, clusters)
        unknown = [t for t in ids if t not in self.setting.task_ids]
        if unknown:
            raise UnknownTaskError(f"unknown task ids {unknown}: {self.setting.name} has "
                                   f"{self.setting.task_ids[0]} … {self.setting.task_ids[-1]}")
        done = self.forgotten(*key)
        again = [t for t in ids if t in done]
        if again:
            raise ValueError(f"already forgotten by {method}: {again} (forgetting is cumulative; "
                             f"pick among the {len(self.setting.task_ids) - len(done)} tasks still merged)")
        left = len(self.setting.task_ids) - len(done)
        if not ids or len(set(ids)) >= left:
            raise ValueError(f"pick between 1 and {left - 1} of the {left} tasks still merged (got {len(set(ids))})")
        system = self.system(*key, say=say, progress=progress)
        before = system.evaluate().set_index("task_id")[self.setting.metric_name]
        spent_before = copy.deepcopy(system.unlearn_costs)
        say(f"unlearning {', '.join(ids)}: retraining {'each' if system.method.retrains else 'none'} "
            f"of them, checking its hash, subtracting it from τ̄")
        receipt = system.unlearn(ids)["receipt"]
        spent = system.unlearn_costs.since(spent_before)
        after = system.evaluate().set_index("task_id")[self.setting.metric_name]
        remaining = list(system.task_ids)
        gone = list(system.unlearned)
        result = {"request": len(self.history) + 1, "method": method, "clusters": key[1], "forgotten": ids,
                  "forgotten so far": len(gone), "storage_bytes": system.storage_bytes(),
                  "gradient_steps": spent.gradient_steps, "parallel_steps": spent.parallel_steps,
                  "unlearn_seconds": round(spent.seconds, 3),
                  "remaining_before": float(before[remaining].mean()), "remaining_after": float(after[remaining].mean()),
                  "forgotten_before": float(before[ids].mean()), "forgotten_after": float(after[ids].mean()),
                  "digest_unlearned": system.served_digest()[:16], "receipt": receipt["sha256"][:16]}
        if self.audit:
            say(f"auditing: fitting {method} from scratch on the {len(remaining)} remaining tasks")
            scratch = self._new(key, progress).fit(remaining)
            result.update(digest_from_scratch=scratch.served_digest()[:16],
                          exact=system.served_digest() == scratch.served_digest())
        else:
            result.update(digest_from_scratch=None, exact=None)
        self.history.append({k: v for k, v in result.items() if k not in ("digest_unlearned", "digest_from_scratch")})
        result["accuracy"] = pd.DataFrame({"before": before, "after": after})
        return result

    def history_frame(self) -> pd.DataFrame:
        """One row per request so far: what it forgot, what it cost, the audit's verdict and the
        first hex digits of its receipt (:mod:`clamu_helpers.unlearning.receipts`; the whole chain is in
        ``demo.systems[(method, clusters)].receipts``)."""
        cols = ["request", "method", "clusters", "forgotten", "forgotten so far", "gradient_steps",
                "parallel_steps", "unlearn_seconds", "remaining_after", "storage_bytes", "exact", "receipt"]
        frame = pd.DataFrame(self.history, columns=cols)
        frame["forgotten"] = frame["forgotten"].map(", ".join)
        return frame.set_index("request")

    def widget(self):
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        from ..runtime.progress import static_widgets
        names = self.task_names()
        if static_widgets():   # headless: say what the widget offers; the next cells replay two clicks
            print(f"(the demo's widgets run in JupyterLab: pick any of these {len(names)} tasks, a method "
                  f"({', '.join(DEMO_METHODS)}) and clusters, then press Forget)")
            display(pd.Series(names, name="task").to_frame())
            return None
        tasks = w.SelectMultiple(options=[(names[t], t) for t in self.setting.task_ids],
                                 value=tuple(self.setting.task_ids[:1]), description="forget", rows=10,
                                 layout=w.Layout(width="420px"))
        method = w.Dropdown(options=DEMO_METHODS, value="sift", description="method")
        clusters = w.IntSlider(value=0, min=0, max=max(2, len(self.setting.tasks) // 2),
                               description="clusters", tooltip="0: one mask per task")
        button = w.Button(description="Forget", button_style="danger")
        status = w.HTML(value="<i>pick tasks and press Forget</i>")
        out, log = w.Output(), w.Output()

        def say(text):
            status.value = f"<b>{text}</b>"

        def click(_):
            button.disabled = True
            out.clear_output()
            try:
                with out:
                    try:
                        r = self.forget(tasks.value, method.value, clusters.value or None, say=say, progress=True)
                    except (ValueError, ClamuError) as e:  # a bad pick gets a sentence, not a traceback
                        say("nothing forgotten")
                        print(f"cannot forget that: {e}")
                        return
                    say(f"request {r['request']} done")
                    fig, ax = plt.subplots(figsize=(7, 2.6))
                    r["accuracy"].plot.bar(ax=ax, width=0.8)
                    ax.set_ylabel(self.setting.metric_name)
                    ax.tick_params(axis="x", labelsize=6)
                    plt.show()
                    display(pd.Series({k: v for k, v in r.items() if k != "accuracy"}).to_frame("value"))
                    print("exact unlearning:", {True: "yes, digests equal", False: "NO", None: "not audited"}[r["exact"]])
                log.clear_output()
                with log:
                    display(self.history_frame())
            finally:
                button.disabled = False

        button.on_click(click)
        self.controls = {"tasks": tasks, "method": method, "clusters": clusters, "button": button,
                         "status": status, "out": out, "history": log}
        return w.VBox([w.HBox([tasks, w.VBox([method, clusters, button])]), status, out,
                       w.HTML("<b>requests so far</b>"), log])
