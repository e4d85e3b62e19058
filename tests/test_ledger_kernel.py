"""The fused quantise-and-add kernel gives the integers of the pure-torch path, and fails alike."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clamu_helpers import ledger_kernel
from clamu_helpers.core.errors import NonFiniteError
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.core.params import ParamSpec
from clamu_helpers.core.taskvector import TaskVector

pytestmark = pytest.mark.skipif(not ledger_kernel.available(), reason="numba is not installed")
SPEC = ParamSpec(("w",), ((3001,),))   # not a multiple of any chunk size


def _vec(seed, tid, spec=SPEC):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(spec.numel, generator=g) * 10 ** torch.empty(spec.numel).uniform_(-12, 1, generator=g)
    v[:10] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5, 0.0, -0.0]) * 2.0 ** -40   # grid ties
    v[10] = 2.0 ** -149   # the smallest subnormal
    return TaskVector(tid, v.float(), spec)


def _sums(kernel, monkeypatch, build):
    monkeypatch.setenv("CLAMU_LEDGER_KERNEL", kernel)
    assert ledger_kernel.available() == (kernel == "numba")
    led = build()
    return led.state()[0]["ledger_sum"], led.digest()


@pytest.mark.parametrize("chunk", [64, 1 << 18])
def test_fused_equals_torch_for_add_add_many_remove_and_stream(monkeypatch, chunk):
    monkeypatch.setattr(MergeLedger, "CHUNK", chunk)
    tvs = [_vec(s, f"t{s}") for s in range(5)]

    def build():
        led = MergeLedger(SPEC)
        led.add_many([(tv.task_id, tv) for tv in tvs[:3]])
        led.add(tvs[3].task_id, tvs[3])
        led.add_stream(tvs[4].task_id, lambda: iter(torch.split(tvs[4].values, 700)))
        led.remove_many([(tvs[1].task_id, tvs[1]), (tvs[3].task_id, tvs[3])])
        return led

    fused, torch_path = _sums("numba", monkeypatch, build), _sums("torch", monkeypatch, build)
    assert torch.equal(fused[0], torch_path[0]) and fused[1] == torch_path[1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-1000, max_value=1000),
                min_size=1, max_size=64), st.integers(20, 48))
def test_kernel_quantises_like_the_float64_formula(values, bits):
    v = np.asarray(values, dtype=np.float32)
    total = np.zeros(v.size, dtype=np.int64)
    assert ledger_kernel.quant_add(total, v, bits, 2.0 ** 61, 1) == -1
    ref = torch.from_numpy(v).to(torch.float64).mul_(2.0 ** bits).round_().to(torch.int64)
    assert np.array_equal(total, ref.numpy())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e30])
def test_a_bad_vector_changes_nothing_and_names_the_problem(monkeypatch, bad):
    monkeypatch.setenv("CLAMU_LEDGER_KERNEL", "numba")
    monkeypatch.setattr(MergeLedger, "CHUNK", 256)
    led = MergeLedger.from_vectors([_vec(0, "a")])
    before = led.digest()
    v = _vec(1, "b").values.clone()
    v[2000] = bad
    broken = TaskVector("b", v, SPEC)
    for add in (lambda: led.add("b", broken), lambda: led.add_many([("c", _vec(2, "c")), ("b", broken)]),
                lambda: led.add_stream("b", lambda: iter(torch.split(broken.values, 512)))):
        with pytest.raises(NonFiniteError, match="NaN/inf" if bad != 1e30 else "outside the ledger's exact range"):
            add()
        assert led.digest() == before and led.task_ids == ("a",)
