"""Bad unlearning requests are refused with specific errors and leave the state untouched;
a request that fails half-way (in retraining, in the subtraction, in the method's refresh)
rolls back to exactly the state before it."""
import pytest
import torch

from clamu_helpers import parallel
from clamu_helpers.core.errors import DuplicateTaskError, ExactnessError, UnknownTaskError
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.unlearning.system import UnlearningSystem
from clamu_helpers.core.taskvector import TaskVector

METHODS_HERE = ["merge", "local", "sift"]


@pytest.fixture(scope="module")
def small():
    return SyntheticSetting(tasks=4)


def fitted(setting, method):
    system = UnlearningSystem(setting, method).fit()
    system.unlearn(["s03"])  # so that "already unlearned" exists
    return system


def snapshot(system):
    return {"served": system.served_digest(), "ledger": system.ledger.digest(), "tasks": system.task_ids,
            "unlearned": list(system.unlearned), "vectors": sorted(system.vectors),
            "unlearn_costs": (system.unlearn_costs.finetunes, system.unlearn_costs.gradient_steps),
            "weights": {t: system.weights_for(t).clone() for t in ("s00", "s01", "s02", "s03")}}


def assert_unchanged(system, before):
    after = snapshot(system)
    for key in before:
        if key == "weights":
            for t, w in before["weights"].items():
                assert torch.equal(w, after["weights"][t]), t
        else:
            assert after[key] == before[key], key


@pytest.mark.parametrize("method", METHODS_HERE)
def test_invalid_requests(method, small):
    system = fitted(small, method)
    before = snapshot(system)
    with pytest.raises(UnknownTaskError, match=r"'nope'.*not merged"):
        system.unlearn(["s00", "nope"])
    assert_unchanged(system, before)
    with pytest.raises(UnknownTaskError, match=r"'s03'.*already unlearned"):
        system.unlearn(["s03"])
    assert_unchanged(system, before)
    with pytest.raises(ValueError, match="at least one task id"):
        system.unlearn([])
    assert_unchanged(system, before)
    with pytest.raises(DuplicateTaskError, match=r"repeated.*'s01'"):
        system.unlearn(["s01", "s00", "s01"])
    assert_unchanged(system, before)
    # and the system still works afterwards
    system.unlearn(["s01"])
    assert system.served_digest() == UnlearningSystem(small, method).fit(["s00", "s02"]).served_digest()


@pytest.mark.parametrize("method", ["merge", "sift"])
def test_retraining_raises_for_the_second_task(method, small, monkeypatch):
    system = fitted(small, method)
    before = snapshot(system)
    real = parallel.finetune

    def flaky(setting, task, *a, **k):
        if task.task_id == "s02":
            raise RuntimeError("worker lost while retraining s02")
        return real(setting, task, *a, **k)

    monkeypatch.setattr(parallel, "finetune", flaky)
    with pytest.raises(RuntimeError, match="worker lost"):
        system.unlearn(["s01", "s02"])
    assert_unchanged(system, before)


@pytest.mark.parametrize("method", ["merge", "sift"])
def test_retraining_returns_other_bits_for_the_second_task(method, small, monkeypatch):
    system = fitted(small, method)
    before = snapshot(system)
    real = parallel.finetune

    def drifting(setting, task, *a, **k):
        tv = real(setting, task, *a, **k)
        if task.task_id != "s02":
            return tv
        values = tv.values.clone()
        values[0] = torch.nextafter(values[0], torch.tensor(1.0))  # one ulp: a different hash
        return TaskVector(tv.task_id, values, tv.spec, tv.meta)

    monkeypatch.setattr(parallel, "finetune", drifting)
    with pytest.raises(ExactnessError, match=r"s02.*digest mismatch.*Nothing was unlearned"):
        system.unlearn(["s01", "s02"])
    assert_unchanged(system, before)


@pytest.mark.parametrize("method", METHODS_HERE)
def test_failure_after_the_first_subtraction_rolls_back(method, small, monkeypatch):
    system = fitted(small, method)
    before = snapshot(system)
    real_remove_many, calls = system.ledger.remove_many, []

    def subtract_one_then_fail(items):
        items = list(items)
        calls.extend(t for t, _ in items)
        real_remove_many(items[:1])  # the first task is really subtracted ...
        raise MemoryError("out of memory while subtracting the second task")  # ... then a crash

    monkeypatch.setattr(system.ledger, "remove_many", subtract_one_then_fail)
    with pytest.raises(MemoryError):
        system.unlearn(["s00", "s02"])
    assert calls == ["s00", "s02"]
    assert_unchanged(system, before)


@pytest.mark.parametrize("method", METHODS_HERE)
def test_failure_in_the_method_refresh_rolls_back(method, small, monkeypatch):
    system = fitted(small, method)
    before = snapshot(system)

    def broken(self, sys_, removed, retrained):
        raise RuntimeError("refresh crashed")

    monkeypatch.setattr(type(system.method), "refresh", broken)  # class: the rollback restores a copy
    with pytest.raises(RuntimeError, match="refresh crashed"):
        system.unlearn(["s00"])
    assert_unchanged(system, before)
    monkeypatch.undo()
    system.unlearn(["s00"])  # the same request succeeds afterwards, exactly
    assert system.served_digest() == UnlearningSystem(small, method).fit(["s01", "s02"]).served_digest()
