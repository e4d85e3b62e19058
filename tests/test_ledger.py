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
    with pytest.raises(ExactnessError, match="has digest blake3:"):
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


# -- batched add_many / remove_many ----------------------------------------------------------
def _vectors(d: int, n: int, scale_of, seed: int = 0) -> list[TaskVector]:
    spec = ParamSpec(("w",), ((d,),))
    g = torch.Generator().manual_seed(seed)
    return [TaskVector(f"t{i}", torch.randn(d, generator=g) * scale_of(i), spec) for i in range(n)]


@pytest.mark.parametrize("max_tasks,scale", [(4096, lambda i: 10.0 ** (i % 5 - 4)),  # mixed magnitudes
                                             (2, lambda i: 2.0 ** 17)])  # |τ·2^40| ≈ 2^57: flushes every task
def test_add_many_gives_the_same_integers_as_add_one_by_one(monkeypatch, max_tasks, scale):
    monkeypatch.setattr(MergeLedger, "CHUNK", 1000)  # several chunks and a short tail
    vs = _vectors(2500, 2 if max_tasks == 2 else 9, scale)
    one = MergeLedger(vs[0].spec, max_tasks=max_tasks)
    for v in vs:
        one.add(v.task_id, v)
    many = MergeLedger(vs[0].spec, max_tasks=max_tasks)
    many.add_many({v.task_id: v for v in vs})
    assert torch.equal(one.state()[0]["ledger_sum"], many.state()[0]["ledger_sum"])
    assert one.digest() == many.digest()
    many.remove_many((v.task_id, v) for v in vs[::2])
    for v in vs[::2]:
        one.remove(v.task_id, v)
    assert one.digest() == many.digest()


def test_add_many_flush_keeps_float64_partial_sums_exact(monkeypatch):
    """Values whose float64 sum over the batch would round: the flush bound must kick in."""
    spec = ParamSpec(("w",), ((3,),))
    big = 1.5 * 2.0 ** 12  # τ·2^40 = 1.5·2^52: two of them already exceed 2^53
    tiny = 2.0 ** -40  # one grid step: 3·2^52 + 1 is not a float64
    vs = [TaskVector("a", torch.tensor([big, -big, tiny]), spec),
          TaskVector("b", torch.tensor([big, big, tiny]), spec),
          TaskVector("c", torch.tensor([tiny, tiny, big]), spec)]
    one = MergeLedger(spec, max_tasks=2 ** 9)  # headroom allows |τ| < 2^13
    for v in vs:
        one.add(v.task_id, v)
    many = MergeLedger(spec, max_tasks=2 ** 9)
    many.add_many((v.task_id, v) for v in vs)
    assert torch.equal(one.state()[0]["ledger_sum"], many.state()[0]["ledger_sum"])
    assert many.state()[0]["ledger_sum"].tolist() == [3 * 2 ** 51 * 2 + 1, 1, 3 * 2 ** 51 + 2]


@pytest.mark.parametrize("bad_chunk", [0, 2])
def test_add_many_failure_changes_nothing(monkeypatch, bad_chunk):
    monkeypatch.setattr(MergeLedger, "CHUNK", 1000)
    vs = _vectors(2500, 4, lambda i: 2.0 ** 17, seed=3)  # big values: flushes happen mid-chunk
    led = MergeLedger(vs[0].spec, max_tasks=4)
    led.add_many((v.task_id, v) for v in vs[:1])
    before = led.digest()
    bad = vs[3].values.clone()
    bad[bad_chunk * 1000 + 7] = float("nan")
    with pytest.raises(NonFiniteError, match="'t3'"):
        led.add_many([(v.task_id, v) for v in vs[1:3]] + [("t3", TaskVector("t3", bad, vs[0].spec))])
    assert led.digest() == before and led.task_ids == ("t0",)


def test_add_many_and_remove_many_check_everything_first():
    vs = _vectors(64, 3, lambda i: 1e-2)
    led = MergeLedger(vs[0].spec)
    led.add_many({v.task_id: v for v in vs[:2]})
    d = led.digest()
    with pytest.raises(DuplicateTaskError, match="already merged"):
        led.add_many([(vs[2].task_id, vs[2]), (vs[0].task_id, vs[0])])
    with pytest.raises(DuplicateTaskError, match="more than once"):
        led.add_many([("x", vs[2]), ("x", vs[2])])
    with pytest.raises(UnknownTaskError):
        led.remove_many([(vs[0].task_id, vs[0]), (vs[2].task_id, vs[2])])
    tampered = vs[1].values.clone()
    tampered[0] = torch.nextafter(tampered[0], torch.tensor(1.0))
    with pytest.raises(ExactnessError):
        led.remove_many([(vs[0].task_id, vs[0]), ("t1", TaskVector("t1", tampered, vs[0].spec))])
    assert led.digest() == d and len(led) == 2


def test_the_stamp_names_the_contents_so_a_cache_of_tau_bar_is_never_stale():
    import copy

    from clamu_helpers.unlearning.system import UnlearningSystem
    led = MergeLedger.from_vectors([tv(1), tv(2)])
    stamps = {led.stamp}
    backup = copy.deepcopy(led)
    assert backup.stamp == led.stamp                       # a copy holds the same contents
    led.remove("t2", tv(2))
    assert led.stamp not in stamps
    stamps.add(led.stamp)
    with pytest.raises(DuplicateTaskError):
        led.add("t1", tv(1))                               # refused (nothing changed): a new stamp costs a recompute only
    led.add("t2", tv(2))
    assert led.stamp not in stamps and torch.equal(led._sum, backup._sum)
    tensors, meta = led.state()
    assert MergeLedger.from_state(tensors, meta).stamp != led.stamp

    # the system's τ̄ is keyed on the stamp: read twice without hashing the sum, new after a change
    system = UnlearningSystem.__new__(UnlearningSystem)
    system.ledger, system._tau_cache = led, None
    first = system.tau_bar
    led.digest = lambda: pytest.fail("τ̄'s cache must not hash the sum")
    assert system.tau_bar is first
    led.remove("t1", tv(1))
    assert torch.equal(system.tau_bar, MergeLedger.from_vectors([tv(2)]).tau_bar())
    system.ledger = backup                                 # a restored backup: its own, older contents
    assert torch.equal(system.tau_bar, backup.tau_bar())
