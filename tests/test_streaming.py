"""Streaming merge and two-pass TALL/EMR from the store equal the in-memory computations."""
import numpy as np
import pytest
import torch

from clamu_helpers.core.errors import ExactnessError, NonFiniteError, StateError
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.core.packing import pack, unpack
from clamu_helpers.core.params import ParamSpec
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers import emr_merging
from clamu_helpers.scaleout.streaming import stream_emr, stream_merge, stream_tall_masks
from clamu_helpers.core.taskvector import TaskVector

SPEC = ParamSpec(("w", "b"), ((37, 29), (13,)))   # d = 1086: not a multiple of the chunk
D = SPEC.numel


def _vectors(T, seed=0, sparse=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(T):
        v = torch.randn(D, generator=g) * 10 ** torch.empty(D).uniform_(-6, -1, generator=g)
        if sparse:  # SIFT-like: many exact zeros, so ties and ε's "zeros → −1" matter
            v = torch.where(torch.rand(D, generator=g) < 0.3, torch.zeros(()), v)
        out.append(TaskVector(f"t{t}", v.float(), SPEC))
    return out


@pytest.fixture()
def filled(tmp_path):
    store = TaskVectorStore(tmp_path)
    tvs = _vectors(7)
    keys = []
    for i, tv in enumerate(tvs):
        k = store.mask_key("test-tv", i)  # any distinct content key will do
        store.put(k, tv)
        keys.append(k)
    return store, tvs, keys


@pytest.mark.parametrize("chunk", [8, 104, 1 << 20])
def test_stream_merge_bit_identical(filled, chunk):
    store, tvs, keys = filled
    ref = MergeLedger.from_vectors(tvs)
    led = stream_merge(store, keys, SPEC, chunk=chunk)
    assert led.digest() == ref.digest()
    assert torch.equal(led.tau_bar(), ref.tau_bar())
    assert led.hashes == ref.hashes


def test_stream_merge_refuses_corrupt_file_and_leaves_ledger_unchanged(filled):
    store, tvs, keys = filled
    led = stream_merge(store, keys[:3], SPEC)
    before = led.digest()
    path = store.path(keys[4])
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10                     # flip one bit of the data, header intact
    path.write_bytes(bytes(raw))
    with pytest.raises(ExactnessError):
        stream_merge(store, [keys[4]], SPEC, ledger=led, chunk=64)
    assert led.digest() == before and len(led) == 3
    assert store.get(keys[4], SPEC) is None and keys[4] not in store   # removed, to be recomputed


def test_add_stream_rolls_back_on_nan(filled):
    _, tvs, _ = filled
    led = MergeLedger.from_vectors(tvs[:2])
    before = led.digest()
    bad = tvs[2].values.clone()
    bad[900] = float("nan")
    with pytest.raises(NonFiniteError):
        led.add_stream("bad", lambda: iter(bad.split(256)))
    assert led.digest() == before


def _ref_quantize(x, bits):
    return x.to(torch.float64).mul_(2.0 ** bits).round_().to(torch.int64)


@pytest.mark.parametrize("bits", [40, 20, 0, -3])
def test_float32_quantize_equals_float64_formula(bits):
    """The optimized ledger quantization is bit-identical to round(float64(x)·2^s)."""
    g = torch.Generator().manual_seed(1)
    led = MergeLedger(SPEC, scale_bits=bits, max_tasks=16)
    s = 2.0 ** -bits
    edge = torch.tensor([0.0, -0.0, 0.5 * s, 1.5 * s, 2.5 * s, -0.5 * s, -2.5 * s, s * (1 + 2 ** -23),
                         1e-45, -1e-45, 1.17e-38, 3e-39, led.max_abs * (1 - 2 ** -23), -led.max_abs * (1 - 2 ** -23)],
                        dtype=torch.float32)
    rnd = torch.randn(D - edge.numel(), generator=g) * 10 ** torch.empty(D - edge.numel()).uniform_(-14, 0, generator=g)
    x = torch.cat([edge, rnd.float().clamp(-led.max_abs / 2, led.max_abs / 2)])
    tv = TaskVector("e", x, SPEC)
    assert torch.equal(led.quantize(tv), _ref_quantize(x, bits))
    led.add("e", tv)
    assert torch.equal(led.state()[0]["ledger_sum"], _ref_quantize(x, bits))


def _direct_tall(tau, tau_bar, lam):
    return tau.abs() > torch.as_tensor(lam, dtype=torch.float32) * (tau_bar - tau).abs()


def test_stream_tall_masks_match_direct_formula_and_masks_module(filled):
    store, tvs, keys = filled
    lams = (0.2, 0.5)
    res = stream_tall_masks(store, keys, SPEC, lambdas=lams, chunk=96)
    tau_bar = MergeLedger.from_vectors(tvs).tau_bar()
    assert res.ledger.digest() == MergeLedger.from_vectors(tvs).digest()
    from clamu_helpers import masks as M
    for lam in lams:
        for tv in tvs:
            direct = _direct_tall(tv.values, tau_bar, lam)
            assert torch.equal(res.masks[lam][tv.task_id], pack(direct))
            assert torch.equal(unpack(res.masks[lam][tv.task_id], D), M.tall_masks(tv.values, tau_bar, lam))
    assert 0 < float(direct.float().mean()) < 1


def test_stream_tall_masks_saved_to_store(filled):
    store, tvs, keys = filled
    res = stream_tall_masks(store, keys, SPEC, lambdas=0.3, save=True)
    tau_bar = MergeLedger.from_vectors(tvs).tau_bar()
    for tv in tvs:
        packed, meta = store.get_mask(res.masks[0.3][tv.task_id])
        assert meta["d"] == D and meta["task_id"] == tv.task_id
        assert torch.equal(unpack(packed, D), _direct_tall(tv.values, tau_bar, 0.3))


def test_stream_emr_matches_direct_formula_and_masks_module(filled):
    store, tvs, keys = filled
    res = stream_emr(store, keys, SPEC, chunk=64, rescaler="global")
    led = MergeLedger.from_vectors(tvs)
    assert res.ledger.digest() == led.digest()
    # the formula, written out here: ε = sign(Σ τ_t) with zeros → −1, on the exact sum
    tau_bar = led.tau_bar()
    eps = torch.where(tau_bar > 0, 1.0, -1.0)
    stack = torch.stack([tv.values for tv in tvs])
    agree = stack * eps > 0
    absmax = torch.where(agree, stack.abs(), torch.zeros(())).amax(0)
    tau_uni = eps * absmax
    assert torch.equal(res.emr.epsilon, eps)
    assert torch.equal(res.emr.tau_uni, tau_uni)
    for i, tv in enumerate(tvs):
        assert torch.equal(res.emr.masks[tv.task_id], pack(agree[i]))
        lam = float(tv.values.abs().double().sum()) / float((agree[i] * absmax).double().sum())
        assert res.emr.rescalers[tv.task_id] == pytest.approx(lam, rel=1e-12)
    from clamu_helpers import masks as M
    ref = emr_merging.emr({tv.task_id: tv.values for tv in tvs}, elect=tau_bar, rescaler="global")
    assert torch.equal(ref.tau_uni, res.emr.tau_uni)
    for tv in tvs:
        assert torch.equal(ref.masks[tv.task_id], res.emr.masks[tv.task_id])
        assert ref.rescalers[tv.task_id] == pytest.approx(res.emr.rescalers[tv.task_id], rel=1e-12)
    # per-tensor rescalers (the default, as the original code), chunks straddling tensor borders
    per = stream_emr(store, keys, SPEC, chunk=40)   # 1073 = 26·40 + 33: a chunk straddles the border
    ref = emr_merging.emr({tv.task_id: tv.values for tv in tvs}, elect=tau_bar, segments=SPEC.sizes)
    for tv in tvs:
        assert ref.rescalers[tv.task_id] == pytest.approx(per.emr.rescalers[tv.task_id], rel=1e-12)
        assert torch.equal(ref.masks[tv.task_id], per.emr.masks[tv.task_id])
    assert len(SPEC.sizes) > 1 and any(abs(per.emr.rescalers[k] - res.emr.rescalers[k]) > 1e-9 for k in per.emr.rescalers)


def test_stream_pass2_detects_file_changed_between_passes(filled):
    store, tvs, keys = filled
    led = stream_merge(store, keys, SPEC)
    path = store.path(keys[0])
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(StateError):
        stream_tall_masks(store, keys, SPEC, lambdas=0.4, ledger=led)


def test_chunk_must_be_multiple_of_8(filled):
    store, _, keys = filled
    with pytest.raises(ValueError, match="multiple of 8"):
        stream_merge(store, keys, SPEC, chunk=100)


@pytest.mark.parametrize("workers", [2, 3])
def test_mask_builds_on_worker_processes_equal_serial_bit_for_bit(filled, workers):
    """Both passes shared among processes (pass 1 as partial ledgers, pass 2 by tasks): the same
    masks, τ_uni and rescalers as the serial streamed build, to the bit."""
    store, tvs, keys = filled
    tall = stream_tall_masks(store, keys, SPEC, lambdas=[0.2, 0.4], chunk=104)
    par = stream_tall_masks(store, keys, SPEC, lambdas=[0.2, 0.4], chunk=104, backend="processes", workers=workers)
    assert par.ledger.digest() == tall.ledger.digest()
    assert list(par.masks[0.2]) == list(tall.masks[0.2]) == [tv.task_id for tv in tvs]
    assert all(torch.equal(par.masks[lam][t], tall.masks[lam][t]) for lam in (0.2, 0.4) for t in tall.masks[lam])
    for rescaler in ("per-tensor", "global"):
        ser = stream_emr(store, keys, SPEC, chunk=40, rescaler=rescaler)
        got = stream_emr(store, keys, SPEC, chunk=40, rescaler=rescaler, backend="processes", workers=workers)
        assert torch.equal(got.emr.tau_uni, ser.emr.tau_uni) and torch.equal(got.emr.epsilon, ser.emr.epsilon)
        assert all(torch.equal(got.emr.masks[k], ser.emr.masks[k]) for k in ser.emr.masks)
        assert got.emr.rescalers == ser.emr.rescalers        # exactly: each task's sums stay in one worker


def test_mask_builds_refuse_an_unknown_backend(filled):
    store, tvs, keys = filled
    with pytest.raises(ValueError, match="unknown backend"):
        stream_emr(store, keys, SPEC, backend="dask")
