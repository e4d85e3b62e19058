"""Sliders over computed results (notebooks 04 and 06): what a slider position shows."""
import pandas as pd
import pytest

from clamu_helpers.reproduction.explore import Explorer


@pytest.fixture
def frame():
    rows = []
    for seed, bump in ((0, 0.0), (1, 0.1)):
        for k in (2, 8):
            for clustering in ("features", "random"):
                for label, acc, store in (("ClAMU", 0.6, 2e6), ("TALL", 0.5, 2e6)):
                    rows.append(dict(label=label, K=k, clustering=clustering, seed=seed, alpha=0.1,
                                     accuracy=acc + bump + (k == 8) * 0.05 + (clustering == "random") * -0.2,
                                     storage_bytes=store * k))
    return pd.DataFrame(rows)


def test_table_is_the_mean_over_seeds_at_the_slider_position(frame):
    ex = Explorer(frame, along="K", choose=("clustering",))
    t = ex.table(8, clustering="features")
    assert list(t.index) == ["ClAMU", "TALL"]
    assert t.loc["ClAMU", "accuracy"] == pytest.approx(0.70)
    assert (t.loc["ClAMU", "accuracy min"], t.loc["ClAMU", "accuracy max"]) == pytest.approx((0.65, 0.75))
    assert t.loc["TALL", "storage MB"] == pytest.approx(16.0) and t.loc["TALL", "seeds"] == 2
    assert ex.table(2, clustering="random").loc["TALL", "accuracy"] == pytest.approx(0.35)


def test_bad_positions_and_frames_are_named(frame):
    ex = Explorer(frame, along="K", choose=("clustering",))
    with pytest.raises(ValueError, match=r"no rows at K=3 .* K takes \[2, 8\]"):
        ex.table(3, clustering="features")
    with pytest.raises(ValueError, match="'method' is not one of the choices"):
        ex.table(2, method="x")
    with pytest.raises(ValueError, match=r"no column\(s\) \['T'\]"):
        Explorer(frame, along="T")


def test_moving_the_slider_redraws_from_the_frame(frame):
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    ex = Explorer(frame, along="K", choose=("clustering",))
    ex.widget()
    c = ex.controls
    assert list(c["slider"].options) == [2, 8] and c["slider"].value == 2
    shown = []
    ex.table = lambda at, **kw: shown.append((at, kw)) or Explorer.table(ex, at, **kw)
    c["slider"].value = 8
    c["clustering"].value = "random"
    assert shown == [(8, {"clustering": "features"}), (8, {"clustering": "random"})]


def test_headless_runs_show_a_static_view_instead_of_widgets(frame, monkeypatch, capsys):
    """Under reproduce (CLAMU_STATIC_WIDGETS) no widget is made: a figure and the table at the
    largest K with the first clustering, which is what a reader of the committed notebook sees."""
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.setenv("CLAMU_STATIC_WIDGETS", "1")
    ex = Explorer(frame, along="K", choose=("clustering",))
    shown = []
    ex.table = lambda at, **kw: shown.append((at, kw)) or Explorer.table(ex, at, **kw)
    assert ex.widget() is None and not hasattr(ex, "controls")
    assert shown == [(8, {"clustering": "features"})]
    assert "K = 8, clustering = features" in capsys.readouterr().out
