"""The teaching demo (notebook 07): one click forgets tasks exactly, and says why when it cannot."""
import pytest

from clamu_helpers.demo import UnlearningDemo
from clamu_helpers.settings.synthetic import SyntheticSetting


@pytest.fixture(scope="module")
def demo():
    return UnlearningDemo(SyntheticSetting(tasks=8), seed=0)


@pytest.mark.parametrize("method,clusters", [("sift", None), ("merge", None), ("tall", 2), ("cluster-merge", 2)])
def test_forget_is_exact_and_reports_costs(demo, method, clusters):
    forget = demo.setting.task_ids[:2]
    r = demo.forget(forget, method=method, clusters=clusters)
    assert r["exact"] and r["digest_unlearned"] == r["digest_from_scratch"]
    assert r["forgotten"] == list(forget)
    steps = 2 * demo.setting.finetune_config.steps
    # merge and SIFT retrain only the forgotten tasks; TALL and task-vector clusters need every τ_t again
    assert r["gradient_steps"] == steps if method in ("merge", "sift") else r["gradient_steps"] > steps
    assert list(r["accuracy"].columns) == ["before", "after"] and len(r["accuracy"]) == 8
    assert 0 <= r["remaining_after"] <= 1


def test_sift_storage_shrinks_when_masks_are_dropped(demo):
    ids = demo.setting.task_ids
    one = demo.forget(ids[:1], "sift")["storage_bytes"]
    three = demo.forget(ids[:3], "sift")["storage_bytes"]
    assert three < one


@pytest.mark.parametrize("pick", [[], "all"])
def test_bad_picks_are_refused_with_a_sentence(demo, pick):
    ids = demo.setting.task_ids if pick == "all" else pick
    with pytest.raises(ValueError, match="pick between 1 and 7"):
        demo.forget(ids)
    with pytest.raises(ValueError, match="unknown method"):
        demo.forget(demo.setting.task_ids[:1], method="magic")


def test_widget_click_runs_forget_and_shows_the_audit(demo, capsys):
    pytest.importorskip("ipywidgets")
    demo.widget()
    c = demo.controls
    c["tasks"].value = tuple(demo.setting.task_ids[:1])
    c["method"].value = "merge"
    c["button"].click()   # outside a kernel the Output widget lets prints through to stdout
    assert "exact unlearning: yes, digests equal" in capsys.readouterr().out
    c["tasks"].value = ()
    c["button"].click()
    assert "cannot forget that: pick between 1 and 7" in capsys.readouterr().out
