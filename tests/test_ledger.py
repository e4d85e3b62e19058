import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clamu_helpers import (DuplicateTaskError, ExactnessError, MergeLedger, NonFiniteError, ParamSpec,
                           ShapeMismatchError, TaskVector, UnknownTaskError)

SPEC = ParamSpec(("w",), ((64,),))


def tv(i: int, scale: float = 1e-2) -> TaskVector:
    g = torch.Generator().manual_seed(i)
    return TaskVector(f"t{i}", torch.randn(64, generator=g) * scale * (1 + i % 3), SPEC)


def test_float32_is_not_exact_but_the_ledger_is():
    a, b = tv(1), tv(2)
    # the reason the ledger exists: float32 (a + b) - b is not a
    vals = [torch.randn(1000, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    assert not torch.equal((vals[0] + vals[1]) - vals[1], vals[0])
    led = MergeLedger(SPEC)
    led.add("t1", a)
    d1 = led.digest()
    led.add("t2", b)
    led.remove("t2", b)
    assert led.digest() == d1
    assert torch.equal(led.tau_bar(), MergeLedger.from_vectors([a]).tau_bar())


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(8))), st.sets(st.integers(0, 7), max_size=7), st.permutations(list(range(8))))
def test_any_add_remove_order_equals_from_scratch(order, removed, removal_order):
    vectors = {i: tv(i) for i in range(8)}
    led = MergeLedger(SPEC)
    for i in order:
        led.add(f"t{i}", vectors[i])
    for i in removal_order:
        if i in removed:
            led.remove(f"t{i}", vectors[i])
    remaining = [vectors[i] for i in sorted(set(range(8)) - removed, reverse=True)]
    scratch = MergeLedger.from_vectors(remaining, spec=SPEC)
    assert led.digest() == scratch.digest()
    assert torch.equal(led.tau_bar(), scratch.tau_bar())
    assert led.task_ids == scratch.task_ids


def test_tau_bar_is_the_sum_to_float32_precision():
    vs = [tv(i) for i in range(20)]
    led = MergeLedger.from_vectors(vs)
    exact = torch.stack([v.values.double() for v in vs]).sum(0)
    assert torch.allclose(led.tau_bar().double(), exact, atol=1e-9, rtol=1e-6)


def test_tampered_vector_is_refused_and_nothing_changes():
    a = tv(3)
    led = MergeLedger.from_vectors([a, tv(4)])
    before = led.digest()
    flipped = a.values.clone()
    flipped.view(torch.int32)[5] ^= 1  # one bit in one float
    with pytest.raises(ExactnessError, match="SHA-256"):
        led.remove("t3", TaskVector("t3", flipped, SPEC))
    assert led.digest() == before and "t3" in led


def test_bad_input_errors_are_specific():
    led = MergeLedger(SPEC)
    led.add("t1", tv(1))
    with pytest.raises(DuplicateTaskError, match="already merged"):
        led.add("t1", tv(1))
    with pytest.raises(UnknownTaskError, match="not merged"):
        led.remove("t9", tv(9))
    with pytest.raises(ShapeMismatchError, match="different parameter spec"):
        led.add("t2", TaskVector("t2", torch.zeros(65), ParamSpec(("w",), ((65,),))))
    nan = torch.zeros(64)
    nan[3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        led.add("t3", TaskVector("t3", nan, SPEC))
    big = torch.zeros(64)
    big[0] = 1e6
    with pytest.raises(NonFiniteError, match="exact range"):
        led.add("t4", TaskVector("t4", big, SPEC))
    assert led.task_ids == ("t1",)


def test_state_round_trip():
    led = MergeLedger.from_vectors([tv(i) for i in range(3)])
    tensors, meta = led.state()
    back = MergeLedger.from_state(tensors, meta)
    assert back.digest() == led.digest() and back.hashes == led.hashes
