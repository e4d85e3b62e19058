"""Partial ledgers: any partition of the tasks, combined in any tree shape, is the one-machine merge."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clamu_helpers.core.errors import DuplicateTaskError, ExactnessError, ShapeMismatchError, StateError
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.core.params import ParamSpec
from clamu_helpers.scaleout.partial import PartialLedger, combine, shares
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers.scaleout.streaming import stream_merge
from clamu_helpers.core.taskvector import TaskVector

SPEC = ParamSpec(("w", "b"), ((19, 7), (5,)))
FP = {"torch": "x", "threads": 1, "device": "cpu"}


def _vectors(T, seed=0, fp=FP):
    g = torch.Generator().manual_seed(seed)
    return [TaskVector(f"t{t}", (torch.randn(SPEC.numel, generator=g)
                                 * 10 ** torch.empty(SPEC.numel).uniform_(-7, 0, generator=g)).float(), SPEC,
                       {"fingerprint": fp}) for t in range(T)]


VECS = _vectors(9)
ONE_MACHINE = MergeLedger.from_vectors(VECS).digest()


def _tree(parts, order):
    """Combine ``parts`` pairwise in the order ``order`` dictates: an arbitrary binary tree."""
    parts = list(parts)
    for pick in order:
        if len(parts) == 1:
            break
        i = pick % (len(parts) - 1)
        parts[i:i + 2] = [combine([parts[i + 1], parts[i]] if pick % 2 else [parts[i], parts[i + 1]])]
    return combine(parts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=st.lists(st.integers(0, 4), min_size=len(VECS), max_size=len(VECS)),
       order=st.lists(st.integers(0, 50), max_size=12), roundtrip=st.booleans())
def test_any_partition_in_any_tree_gives_the_one_machine_digest(tmp_path_factory, groups, order, roundtrip):
    by_group = {}
    for tv, g in zip(VECS, groups):
        by_group.setdefault(g, []).append(tv)
    parts = [PartialLedger.of(vs) for _, vs in sorted(by_group.items())]
    if roundtrip:   # through the file format, as between machines
        d = tmp_path_factory.mktemp("parts")
        parts = [PartialLedger.load(p.save(d / f"{i}.safetensors")) for i, p in enumerate(parts)]
    out = _tree(parts, order)
    assert out.digest() == ONE_MACHINE and out.fingerprint == FP
    assert torch.equal(out.ledger.tau_bar(), MergeLedger.from_vectors(VECS).tau_bar())


def test_combine_refuses_and_changes_nothing():
    a, b = PartialLedger.of(VECS[:4]), PartialLedger.of(VECS[3:6])
    before = (a.digest(), b.digest())
    with pytest.raises(DuplicateTaskError, match="'t3' is in partial ledgers 0 and 1"):
        combine([a, b])
    other = PartialLedger.of(_vectors(2, fp={**FP, "device": "cuda:0", "gpu": "NVIDIA H200"})[1:])
    with pytest.raises(ExactnessError, match=r"different environments \(fields \['device', 'gpu'\]\)"):
        combine([a, other])
    grid = PartialLedger(MergeLedger.from_vectors(VECS[6:], scale_bits=30), FP)
    with pytest.raises(ExactnessError, match="different grids"):
        combine([a, grid])
    spec2 = ParamSpec(("w",), ((3,),))
    wrong = PartialLedger(MergeLedger.from_vectors([TaskVector("z", torch.ones(3), spec2)]), FP)
    with pytest.raises(ShapeMismatchError, match="different parameter specs"):
        combine([a, wrong])
    full = PartialLedger(MergeLedger.from_vectors(VECS[6:8], max_tasks=4), FP)
    with pytest.raises(ValueError, match="more than max_tasks=4"):
        combine([PartialLedger(MergeLedger.from_vectors(VECS[:3], max_tasks=4), FP), full])
    assert (a.digest(), b.digest()) == before
    with pytest.raises(ExactnessError, match="different environments"):
        PartialLedger.of([*VECS[:2], *_vectors(3, fp=None)[2:]])


def test_a_corrupt_or_foreign_file_is_refused(tmp_path):
    path = PartialLedger.of(VECS[:3]).save(tmp_path / "p.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40   # a bit of the int64 sum
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(StateError, match="does not match its recorded digest"):
        PartialLedger.load(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(raw[:len(raw) // 2]))
    with pytest.raises(StateError, match="cannot read a partial ledger"):
        PartialLedger.load(cut)
    with pytest.raises(StateError, match="no partial ledger"):
        PartialLedger.load(tmp_path / "missing.safetensors")


def test_shares_cover_the_keys_once():
    keys = [f"k{i}" for i in range(11)]
    for n in (1, 2, 3, 11, 20):
        s = shares(keys, n)
        assert [k for part in s for k in part] == keys and all(s) and len(s) == min(n, 11)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    store = TaskVectorStore(tmp_path_factory.mktemp("store"))
    keys = []
    for i, tv in enumerate(VECS):
        k = store.mask_key("partial-test", i)
        store.put(k, tv)
        keys.append(k)
    return store, keys


@pytest.mark.parametrize("workers", [1, 3])
def test_stream_merge_on_processes_equals_serial(stored, workers):
    store, keys = stored
    serial = stream_merge(store, keys, SPEC)
    assert serial.digest() == ONE_MACHINE
    led = stream_merge(store, keys, SPEC, backend="processes", workers=workers)
    assert led.digest() == ONE_MACHINE
    base = stream_merge(store, keys[:2], SPEC)   # into an existing ledger, as serial does
    assert stream_merge(store, keys[2:], SPEC, ledger=base, backend="processes", workers=2).digest() == ONE_MACHINE
    with pytest.raises(ValueError, match="unknown backend"):
        stream_merge(store, keys, SPEC, backend="threads")
