"""The runs behind the composite figures and tables (clamu_helpers.reproduction.figures): what a
notebook hands to over_seeds, checked on the synthetic setting at smoke (tiny, seconds)."""
import pandas as pd

from clamu_helpers.reproduction import experiments as ex
from clamu_helpers.reproduction import figures


def test_figure4_has_every_clustering_at_every_k_beside_global_and_local():
    df = figures.figure4("synthetic", "smoke", 0, ks=[2])
    assert set(df.label) == {"global", "local", "random K=2", "features K=2", "task-vectors K=2"}
    assert set(df.clustering) == {"global", "local", *figures.FIGURE4_CLUSTERINGS}
    assert df.set_index("label").K.drop(["global", "local"]).eq(2).all()
    assert df.set_index("label").K[["global", "local"]].isna().all()
    assert df.accuracy.between(0, 1).all()


def test_figure5_runs_the_supermask_control_on_feature_clusters_only():
    rows = ex.methods("TALL", "ClAMU supermask (control)")
    df = figures.figure5("synthetic", "smoke", 0, rows, ("features", "random"))
    ks = ex.cluster_counts(len(figures.get_setting("synthetic", "smoke", 0).tasks))
    assert sorted(df.K.unique()) == sorted(ks)
    control = df[df.label == "ClAMU supermask (control)"]
    assert set(control.clustering) == {"features"} and len(control) == len(ks)
    assert len(df[df.label == "TALL"]) == 2 * len(ks)


def test_table_sizes_and_configurations():
    assert figures.table1_sizes(200) == [2, 5, 50, 200]
    assert figures.table1_sizes(20) == [2, 5, 20]
    assert figures.table1_sizes(2) == [2]
    configs = figures.table3_configs(100)
    ks = ex.cluster_counts(100)
    clustered = [label for label in configs if "feature clusters" in label]
    assert clustered == [f"ClAMU, {ks[len(ks) // 2]} feature clusters"]
    method, params = configs[clustered[0]]
    assert method == "clamu" and params["cluster_by"] == "features" and params["search_on"] == "tasks"
    assert {"TALL", "ClAMU", "SIFT-Masks", "task arithmetic"} <= set(configs)


def test_sift_accuracy_runs_from_two_tasks_on_the_log_grid():
    methods = ex.methods("averaging", "SIFT-Masks")
    df = figures.sift_accuracy("synthetic", "smoke", 0, methods)
    n = len(figures.get_setting("synthetic", "smoke", 0).tasks)
    assert sorted(df.tasks.unique()) == [t for t in ex.log_sizes(n) if t >= 2]
    assert set(df.label) == set(methods)
    assert isinstance(df, pd.DataFrame) and df.accuracy.between(0, 1).all()
