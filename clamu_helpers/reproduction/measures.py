"""The quantity each claim is judged on, as a function of one seed's rows.

A claim's verdict comes from an interval over seeds (:mod:`clamu_helpers.reproduction.claims`);
what it is an interval *of* is written here, once, beside the claims, and the notebooks only name
it: ``experiments.per_seed(frame, measures.lead("ClAMU", "TALL", "EMR"))`` is Figure 3's
"ClAMU − max(TALL, EMR)". Each function returns a ``quantity(sub) -> float`` for
:func:`clamu_helpers.reproduction.experiments.per_seed`; ``sub`` is one seed's rows of a tidy
results frame, ``by`` the column naming the rows compared (``label``, ``model``,
``clustering``), ``metric`` the score column, and ``at_largest`` (e.g. ``"tasks"``) keeps only
the rows at that column's largest value first.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

Quantity = Callable[[pd.DataFrame], float]


def scores(sub: pd.DataFrame, by: str = "label", metric: str = "accuracy", at_largest: str | None = None) -> pd.Series:
    """``metric`` indexed by ``by`` (one row each), at the largest ``at_largest`` if given."""
    if at_largest is not None:
        sub = sub[sub[at_largest] == sub[at_largest].max()]
    s = sub.set_index(by)[metric]
    if not s.index.is_unique:
        raise ValueError(f"several rows per {by} in one seed's rows: {sorted(s.index[s.index.duplicated()])}")
    return s


def lead(label: str, *others: str, by: str = "label", metric: str = "accuracy", at_largest: str | None = None,
         relative: bool = False) -> Quantity:
    """``label``'s score minus the best of ``others`` (÷ that best with ``relative``): ClAMU −
    max(TALL, EMR), ClAMU − its control, features − random clusters, (SIFT − averaging) / averaging."""
    if not others:
        raise ValueError("lead needs at least one row to compare with")

    def quantity(sub):
        s = scores(sub, by, metric, at_largest)
        best = max(s[o] for o in others)
        return (s[label] - best) / best if relative else s[label] - best
    return quantity


def best_lead(column: str, value, reference: str, by: str = "label", metric: str = "accuracy") -> Quantity:
    """The best score among the rows whose ``column`` is ``value`` minus ``reference``'s score:
    Figure 4's "the best feature-cluster merge over K − the local models"."""
    def quantity(sub):
        best = sub.loc[sub[column] == value, metric]
        if best.empty:
            raise ValueError(f"no rows with {column} == {value!r}")
        return float(best.max()) - float(scores(sub[sub[by] == reference], by, metric)[reference])
    return quantity


def mean_lead(label: str, other: str, along: str, before_last: bool = False, by: str = "label",
              metric: str = "accuracy") -> Quantity:
    """``label``'s score minus ``other``'s at each value of ``along`` (each the mean over the
    rows there, e.g. forget orders), averaged over those values — all of them, or those before the
    last with ``before_last``: Table 3's "ClAMU stays above TALL as tasks are unlearned"."""
    def quantity(sub):
        t = sub[sub[by].isin([label, other])].pivot_table(index=along, columns=by, values=metric, aggfunc="mean")
        if before_last:
            t = t[t.index < t.index.max()]
        return float((t[label] - t[other]).mean())
    return quantity


def best_over(along: str, quantity: Quantity) -> Quantity:
    """The largest of ``quantity`` over the values of ``along`` (each computed on the rows there):
    the draft abstract's "up to 20% improved accuracy" as the best ClAMU − max(TALL, EMR) over K."""
    def best(sub):
        if sub.empty:
            raise ValueError(f"no rows to take the best over {along}")
        return max(float(quantity(at)) for _, at in sub.groupby(along, sort=True))
    return best


def recovery(label: str, low: str, high: str, by: str = "label", metric: str = "accuracy",
             at_largest: str | None = None) -> Quantity:
    """The share of the way from ``low`` to ``high`` that ``label`` covers, (x − low) / (high −
    low): Table 1's (ClAMU − Global) / (Local − Global), Figure 2's (merged − zero-shot) /
    (local − zero-shot)."""
    def quantity(sub):
        s = scores(sub, by, metric, at_largest)
        return (s[label] - s[low]) / (s[high] - s[low])
    return quantity


def growth(label: str, along: str = "tasks", by: str = "label", metric: str = "accuracy") -> Quantity:
    """``label``'s score at the largest ``along`` ÷ at the smallest (Table 1: the merge at 200
    authors ÷ at 2)."""
    def quantity(sub):
        g = sub[sub[by] == label].set_index(along)[metric]
        return g[g.index.max()] / g[g.index.min()]
    return quantity


def ratio(label: str, reference: str, column: str, by: str = "label") -> Quantity:
    """``column`` of ``label`` ÷ of ``reference`` (Table 3: ClAMU's gradient steps ÷ SIFT-Masks')."""
    def quantity(sub):
        t = sub.set_index(by)
        return t.loc[label, column] / t.loc[reference, column]
    return quantity


def change(column: str, frac: float = 0.95) -> Quantity:
    """Tables 2–3: ``column`` at the checkpoint nearest ``frac`` of the tasks unlearned minus at
    none unlearned, each the mean over forget orders (rows: ``unlearned``, ``remaining``)."""
    def quantity(sub):
        n = sub.remaining.max()
        k = min(sub.unlearned.unique(), key=lambda u: abs(u - frac * n))
        by = sub.groupby("unlearned")[column].mean()
        return by[k] - by[0]
    return quantity


def head_gain(method: str, sign: int = +1) -> Quantity:
    """Tables 4–5: ``method``'s label-name − CLS head accuracy (× ``sign``), averaged over the
    clusterings (rows: ``label``, ``clustering``, ``head``)."""
    def quantity(sub):
        t = sub[sub.label == method].pivot_table(index="clustering", columns="head", values="accuracy")
        return sign * float((t["label-name"] - t["cls"]).mean())
    return quantity


#: Figure 2's claim and quantity per setting, from the rows ``model`` ∈ {merged, local, zero-shot}
#: at the largest T: CLIP (i) merged − local; label subsets and fortunes the share of the local
#: models' lead over M0 the merge keeps, (merged − zero-shot) / (local − zero-shot); Sent140
#: merged − zero-shot
FIGURE2: dict[str, tuple[str, Quantity]] = {
    "images-uniform": ("fig2-uniform", lead("merged", "local", by="model", at_largest="tasks")),
    "images-label-subsets": ("fig2-label-subsets", recovery("merged", "zero-shot", "local", by="model", at_largest="tasks")),
    "reviews-by-movie": ("fig2-reviews", lead("merged", "zero-shot", by="model", at_largest="tasks")),
    "fortunes-label-subsets": ("fig2-fortunes", recovery("merged", "zero-shot", "local", by="model", at_largest="tasks")),
}


__all__ = ["FIGURE2", "Quantity", "best_lead", "best_over", "change", "mean_lead", "growth", "head_gain", "lead", "ratio", "recovery",
           "scores"]
