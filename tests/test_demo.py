"""The teaching demo (notebook 07): requests forget tasks exactly and cumulatively, each costs
one unlearning, the history records them, and a bad pick is refused with a sentence."""
import pytest

from clamu_helpers.reproduction.demo import UnlearningDemo, task_name
from clamu_helpers.core.errors import UnknownTaskError
from clamu_helpers.settings.synthetic import SyntheticSetting


@pytest.fixture
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


def test_requests_are_cumulative_and_each_costs_one_unlearning(demo):
    ids = demo.setting.task_ids
    first = demo.forget(ids[:1], "sift")
    system = demo.systems[("sift", None)]
    second = demo.forget(ids[1:3], "sift")
    assert demo.systems[("sift", None)] is system          # kept between requests, not refitted
    assert demo.forgotten("sift") == list(ids[:3]) and second["forgotten so far"] == 3
    steps = demo.setting.finetune_config.steps
    assert (first["gradient_steps"], second["gradient_steps"]) == (steps, 2 * steps)   # this request's, not the total
    assert second["exact"] and second["storage_bytes"] < first["storage_bytes"]   # the audit covers all three
    hist = demo.history_frame()
    assert list(hist.index) == [1, 2] and list(hist["forgotten"]) == ["s00", "s01, s02"]
    assert list(hist["exact"]) == [True, True] and list(hist["gradient_steps"]) == [steps, 2 * steps]
    assert list(hist["receipt"]) == [r["sha256"][:16] for r in system.receipts]   # one receipt per click
    with pytest.raises(ValueError, match=r"already forgotten by sift: \['s01'\]"):
        demo.forget(["s01"], "sift")
    assert demo.forget(["s01"], "merge")["exact"]          # another method has its own system


def test_bad_picks_are_refused_with_a_sentence(demo):
    with pytest.raises(ValueError, match="pick between 1 and 7 of the 8 tasks still merged"):
        demo.forget([])
    with pytest.raises(ValueError, match="pick between 1 and 7"):
        demo.forget(demo.setting.task_ids)
    with pytest.raises(ValueError, match="unknown method"):
        demo.forget(demo.setting.task_ids[:1], method="magic")
    with pytest.raises(UnknownTaskError, match=r"unknown task ids \['zz'\]"):
        demo.forget(["zz"])
    assert demo.history == [] and demo.systems == {}      # nothing fitted for a refused pick


def test_tasks_are_named_by_what_they_hold():
    from clamu_helpers import get_setting
    images = get_setting("images-label-subsets", "smoke", 0)
    name = task_name(images.tasks[0])
    assert name.startswith("t000 · ") and images.tasks[0].source in name and "labels" in name
    assert UnlearningDemo(SyntheticSetting(tasks=3)).task_names()["s00"].startswith("s00 · blobs")


def test_widget_click_runs_forget_and_shows_the_audit_and_history(demo, capsys):
    pytest.importorskip("ipywidgets")
    demo.widget()
    c = demo.controls
    assert c["tasks"].options[0][0].startswith("s00 · blobs")
    c["tasks"].value = tuple(demo.setting.task_ids[:1])
    c["method"].value = "merge"
    c["button"].click()   # outside a kernel the Output widget lets prints through to stdout
    printed = capsys.readouterr().out
    assert "exact unlearning: yes, digests equal" in printed and "request 1 done" in c["status"].value
    assert not c["button"].disabled and len(demo.history) == 1
    c["tasks"].value = ()
    c["button"].click()
    assert "cannot forget that: pick between 1 and 6" in capsys.readouterr().out
    assert "nothing forgotten" in c["status"].value and len(demo.history) == 1
