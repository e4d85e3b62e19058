"""Sliders over results a notebook already computed (no recomputation per move).

``Explorer(frame, along="K", choose=("clustering",))`` shows, for the value of ``along`` a
slider picks (and the values the dropdowns of ``choose`` pick), each method's mean accuracy
over seeds with its spread, the chosen scale α and the storage: notebook 04 slides the number
of clusters K, notebook 06 the number of tasks T. :meth:`Explorer.table` is what the widget
shows, so it is tested without a browser.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

SHOWN = ("accuracy", "alpha", "mask_density", "storage_bytes")


class Explorer:
    """A slider over ``along`` and a dropdown per column of ``choose``, over ``frame``."""

    def __init__(self, frame: pd.DataFrame, along: str, by: str = "label", choose: Sequence[str] = (),
                 columns: Sequence[str] = SHOWN):
        missing = [c for c in (along, by, *choose, "accuracy") if c not in frame]
        if missing:
            raise ValueError(f"the frame has no column(s) {missing}; it has {list(frame.columns)}")
        if frame.empty:
            raise ValueError("nothing to explore: the frame is empty")
        self.frame, self.along, self.by, self.choose = frame, along, by, tuple(choose)
        self.columns = [c for c in columns if c in frame]

    def values(self, column: str) -> list:
        return sorted(self.frame[column].dropna().unique().tolist())

    def table(self, at, **chosen) -> pd.DataFrame:
        """One row per ``by`` (method) at ``along == at`` and the ``chosen`` values: the mean of
        each shown column over seeds, the accuracy's min and max over seeds, storage in MB."""
        sub = self.frame[self.frame[self.along] == at]
        for col, val in chosen.items():
            if col not in self.choose:
                raise ValueError(f"{col!r} is not one of the choices {list(self.choose)}")
            sub = sub[sub[col] == val]
        if sub.empty:
            raise ValueError(f"no rows at {self.along}={at!r} with {chosen}; {self.along} takes {self.values(self.along)}")
        g = sub.groupby(self.by, sort=False)
        out = g[self.columns].mean(numeric_only=True)
        out.insert(1, "accuracy min", g["accuracy"].min())
        out.insert(2, "accuracy max", g["accuracy"].max())
        if "storage_bytes" in out:
            out["storage_bytes"] = out["storage_bytes"] / 1e6
            out = out.rename(columns={"storage_bytes": "storage MB"})
        out["seeds"] = g.size() if "seed" not in sub else g["seed"].nunique()
        return out.sort_values("accuracy", ascending=False)

    def plot(self, table: pd.DataFrame, at):
        """The bar chart the widget draws: mean accuracy per method, min–max over seeds."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(table) + 1))
        ax.barh(table.index[::-1], table["accuracy"][::-1],
                xerr=[(table["accuracy"] - table["accuracy min"])[::-1],
                      (table["accuracy max"] - table["accuracy"])[::-1]])
        ax.set_xlabel(f"accuracy at {self.along} = {at} (mean; bars: min–max over seeds)")
        return fig

    def static(self):
        """What :meth:`widget` shows at its largest ``along`` and first choices, without widgets
        (headless runs: :func:`clamu_helpers.runtime.progress.static_widgets`)."""
        import matplotlib.pyplot as plt
        from IPython.display import display
        at = self.values(self.along)[-1]
        chosen = {c: self.values(c)[0] for c in self.choose}
        table = self.table(at, **chosen)
        print(f"{self.along} = {at}" + "".join(f", {c} = {v}" for c, v in chosen.items())
              + " (run the cell in JupyterLab for the sliders)")
        self.plot(table, at)
        plt.show()
        display(table.round(3))
        return None

    def widget(self):
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        from ..runtime.progress import static_widgets
        if static_widgets():
            return self.static()

        slider = w.SelectionSlider(options=self.values(self.along), description=self.along,
                                   continuous_update=False)
        drops = {c: w.Dropdown(options=self.values(c), description=c) for c in self.choose}
        out = w.Output()

        def show(_=None):
            out.clear_output(wait=True)
            with out:
                try:
                    table = self.table(slider.value, **{c: d.value for c, d in drops.items()})
                except ValueError as e:
                    print(e)
                    return
                self.plot(table, slider.value)
                plt.show()
                display(table.round(3))

        for control in (slider, *drops.values()):
            control.observe(show, names="value")
        show()
        self.controls = {"slider": slider, **drops, "out": out}
        return w.VBox([w.HBox([slider, *drops.values()]), out])
