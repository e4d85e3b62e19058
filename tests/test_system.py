import pytest
import torch

from clamu_helpers import (DuplicateTaskError, ExactnessError, UnknownTaskError, UnlearningSystem)
from clamu_helpers.methods import METHODS


@pytest.mark.parametrize("method", ["merge", "local"])
def test_unlearning_equals_from_scratch(tiny, method):
    ids = tiny.task_ids
    a = UnlearningSystem(tiny, method).fit()
    a.unlearn([ids[2]])
    a.unlearn([ids[5], ids[0]])
    b = UnlearningSystem(tiny, method).fit([i for i in ids if i not in {ids[0], ids[2], ids[5]}])
    assert a.served_digest() == b.served_digest()
    assert a.ledger.digest() == b.ledger.digest()
    for tid in ids:
        assert torch.equal(a.weights_for(tid), b.weights_for(tid))


def test_merge_serves_the_average_and_local_the_task_vector(tiny):
    m = UnlearningSystem(tiny, "merge").fit()
    vecs = m.finetune(tiny.task_ids)
    mean = torch.stack([v.values for v in vecs.values()]).double().sum(0) / len(vecs)
    assert torch.allclose(m.weights_for("s00").double(), tiny.theta0.double() + mean, atol=1e-6)
    loc = UnlearningSystem(tiny, "local").fit()
    assert torch.equal(loc.weights_for("s03"), tiny.theta0 + vecs["s03"].values)
    assert loc.storage_bytes() == len(tiny.tasks) * m.storage_bytes()


def test_local_beats_merge_on_label_subsets(tiny):
    merged = UnlearningSystem(tiny, "merge").fit().evaluate()["accuracy"].mean()
    local = UnlearningSystem(tiny, "local").fit().evaluate()["accuracy"].mean()
    assert local > merged + 0.05


def test_cost_report_counts_steps(tiny):
    s = UnlearningSystem(tiny, "merge").fit()
    steps = tiny.finetune_config.steps
    assert s.fit_costs.gradient_steps == len(tiny.tasks) * steps and s.fit_costs.parallel_steps == steps
    s.unlearn(["s01", "s02"])
    assert s.unlearn_costs.gradient_steps == 2 * steps and s.unlearn_costs.finetunes == 2
    r = s.report()
    assert r["tasks"] == len(tiny.tasks) - 2 and r["unlearned"] == ["s01", "s02"]


def test_bad_requests_change_nothing(tiny):
    s = UnlearningSystem(tiny, "merge").fit()
    before = s.served_digest()
    with pytest.raises(ValueError, match="at least one"):
        s.unlearn([])
    with pytest.raises(UnknownTaskError, match="not merged"):
        s.unlearn(["nope"])
    with pytest.raises(DuplicateTaskError, match="repeated"):
        s.unlearn(["s01", "s01"])
    s.unlearn(["s01"])
    with pytest.raises(UnknownTaskError, match="already unlearned"):
        s.unlearn(["s01"])
    after = s.served_digest()
    assert after != before
    with pytest.raises(UnknownTaskError):
        s.unlearn(["s02", "zzz"])
    assert s.served_digest() == after


def test_changed_hyperparameter_is_refused(tiny):
    s = UnlearningSystem(tiny, "merge").fit()
    before = s.served_digest()
    from dataclasses import replace
    tiny2 = tiny.subset(len(tiny.tasks))
    tiny2.finetune_config = replace(tiny.finetune_config, lr=tiny.finetune_config.lr * 1.01)
    s.setting = tiny2
    with pytest.raises(ExactnessError, match="Nothing was unlearned"):
        s.unlearn(["s04"])
    s.setting = tiny
    assert s.served_digest() == before


def test_every_registered_method_is_known():
    assert {"merge", "local"} <= set(METHODS)
