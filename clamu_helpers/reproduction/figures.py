"""The run behind each composite figure and table, for one seed: what a notebook hands to
:func:`~clamu_helpers.reproduction.experiments.over_seeds`.

:mod:`~clamu_helpers.reproduction.experiments` holds the building blocks (``compare_methods``,
``methods_vs_tasks``, ``unlearning_orders``, ``merging_at_scale``); a figure or table that
combines them over clusterings, K, heads or methods is written here, once, with the notebook's
parameters as arguments, so the notebooks only call it::

    fig4 = ex.over_seeds(lambda sd: figures.figure4(name, profile, sd), seeds, desc=name)

Every function builds its setting with :func:`clamu_helpers.get_setting` for ``seed`` and returns
the tidy frame the notebook plots, saves and judges (one row per method or configuration, the
columns of the building block it uses plus those named in its docstring).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..settings import get_setting
from . import experiments as ex
from .profiles import ALL, CLAMU_PROTOCOL, take

#: the clusterings Figure 4 compares (``cluster_by`` of the ``cluster-merge`` method)
FIGURE4_CLUSTERINGS = ("random", "features", "task-vectors")
#: the heads Tables 4–5 compare (the ``head`` of an image setting)
HEADS = ("cls", "label-name")


def figure4(name: str, profile: str, seed: int, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Figure 4: the merge (``global``), the local models, and the cluster merge at each K of
    ``ks`` (default :func:`~clamu_helpers.reproduction.experiments.cluster_counts`) for each
    clustering of :data:`FIGURE4_CLUSTERINGS`; adds ``clustering`` (the label's first word) and
    ``K``."""
    setting = get_setting(name, profile, seed)
    methods = {"global": ("merge", {}), "local": ("local", {})}
    for k in ks or ex.cluster_counts(len(setting.tasks)):
        for by in FIGURE4_CLUSTERINGS:
            methods[f"{by} K={k}"] = ("cluster-merge", {"clusters": k, "cluster_by": by})
    df = ex.compare_methods(setting, methods, seed=seed)
    df["clustering"] = df["label"].str.split(" ").str[0]
    df["K"] = df["param_clusters"] if "param_clusters" in df else None
    return df


def table1_sizes(n_tasks: int) -> list[int]:
    """Table 1's author counts: the draft's 2, 5 and 50 below ``n_tasks``, and ``n_tasks``."""
    return sorted({n for n in (2, 5, 50) if n < n_tasks} | {n_tasks})


def table1(name: str, profile: str, seed: int, methods: dict[str, tuple[str, dict]],
           sizes: Sequence[int] | None = None) -> pd.DataFrame:
    """Table 1: ``methods`` on the first T authors for each T of ``sizes`` (default
    :func:`table1_sizes` of the setting's author count)."""
    setting = get_setting(name, profile, seed)
    return ex.methods_vs_tasks(setting, methods, sizes or table1_sizes(len(setting.tasks)), seed=seed)


def figure5(name: str, profile: str, seed: int, methods: dict[str, tuple[str, dict]],
            clusterings: Sequence[str]) -> pd.DataFrame:
    """Figure 5: each of ``methods`` with one mask per cluster, at every K of
    :func:`~clamu_helpers.reproduction.experiments.cluster_counts` and each clustering of
    ``clusterings``; the supermask control runs with the draft's feature clusters only. Adds
    ``K`` and ``clustering``."""
    setting = get_setting(name, profile, seed)
    frames = []
    for k in ex.cluster_counts(len(setting.tasks)):
        for by in clusterings:
            ms = {label: (m, {**p, "clusters": k, "cluster_by": by}) for label, (m, p) in methods.items()
                  if by == "features" or m != "clamu-supermask"}
            frames.append(ex.compare_methods(setting, ms, seed=seed).assign(K=k, clustering=by))
    return pd.concat(frames, ignore_index=True)


def table3_configs(n_tasks: int) -> dict[str, tuple[str, dict]]:
    """Table 3's rows on ``n_tasks`` tasks: TALL, ClAMU per task and on the middle K of
    :func:`~clamu_helpers.reproduction.experiments.cluster_counts` feature clusters (ClAMU's shared
    search, :data:`~clamu_helpers.reproduction.profiles.CLAMU_PROTOCOL`), SIFT-Masks, task arithmetic."""
    ks = ex.cluster_counts(n_tasks)
    k = ks[len(ks) // 2]
    return {"TALL": ex.COMPARISON["TALL"], "ClAMU": ex.COMPARISON["ClAMU"],
            f"ClAMU, {k} feature clusters": ("clamu", {**CLAMU_PROTOCOL, "clusters": k, "cluster_by": "features"}),
            "SIFT-Masks": ex.COMPARISON["SIFT-Masks"], "task arithmetic": ex.COMPARISON["task arithmetic"]}


def table3(name: str, profile: str, seed: int, tasks=ALL, orders: int = 5) -> pd.DataFrame:
    """Table 3: every row of :func:`table3_configs` unlearned along ``orders`` forget orders on
    the first ``tasks`` tasks (:func:`~clamu_helpers.reproduction.profiles.take`: a count, or
    ``profiles.ALL``), each checkpoint one request; adds ``label`` and ``tasks``."""
    setting = get_setting(name, profile, seed)
    n = len(take(setting.tasks, tasks))
    setting = setting.subset(n)
    return pd.concat([ex.unlearning_orders(setting, m, orders=orders, seed=seed, batch=True, **p).assign(label=label, tasks=n)
                      for label, (m, p) in table3_configs(n).items()], ignore_index=True)


def sift_accuracy(name: str, profile: str, seed: int, methods: dict[str, tuple[str, dict]],
                  sizes=ALL) -> pd.DataFrame:
    """SIFT-Masks' accuracy as tasks grow: ``methods`` at the sizes of
    :func:`~clamu_helpers.reproduction.experiments.log_sizes` from 2 tasks on, thinned by
    ``sizes`` (:func:`~clamu_helpers.reproduction.profiles.take`)."""
    setting = get_setting(name, profile, seed)
    grid = take([n for n in ex.log_sizes(len(setting.tasks)) if n >= 2], sizes)
    return ex.methods_vs_tasks(setting, methods, grid, seed=seed)


def heads(name: str, profile: str, seed: int, max_tasks: int) -> pd.DataFrame:
    """Tables 4–5: for each head of :data:`HEADS`, on the first ``max_tasks`` tasks at the largest
    K of :func:`~clamu_helpers.reproduction.experiments.cluster_counts`, random and feature clusters:
    the cluster merge (``Local``: the draft's local models are cluster models here), TALL, EMR and
    ClAMU with one mask per cluster. Adds ``head``, ``clustering`` and ``K``."""
    frames = []
    for head in HEADS:
        setting = get_setting(name, profile, seed, head=head)
        setting = setting.subset(min(max_tasks, len(setting.tasks)))
        k = ex.cluster_counts(len(setting.tasks))[-1]
        for by in ("random", "features"):
            ms = {"Local": ("cluster-merge", {"clusters": k, "cluster_by": by}),
                  **{label: (m, {**p, "clusters": k, "cluster_by": by})
                     for label, (m, p) in ex.methods("TALL", "EMR", "ClAMU").items()}}
            frames.append(ex.compare_methods(setting, ms, seed=seed).assign(head=head, clustering=by, K=k))
    return pd.concat(frames, ignore_index=True)


__all__ = ["FIGURE4_CLUSTERINGS", "HEADS", "figure4", "figure5", "heads", "sift_accuracy", "table1", "table1_sizes",
           "table3", "table3_configs"]
