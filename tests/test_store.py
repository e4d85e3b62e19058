"""The task-vector store: keys, hash-checked reads, streaming reads, masks, concurrent writers."""
import multiprocessing as mp

import pytest
import torch

from clamu_helpers.core.errors import ShapeMismatchError, StateError
from clamu_helpers.training.finetune import finetune
from clamu_helpers.core.packing import pack
from clamu_helpers.core.params import ParamSpec
from clamu_helpers.settings.base import FinetuneConfig
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers.core.taskvector import TaskVector

SPEC = ParamSpec(("a", "b", "c"), ((5, 7), (3,), (11, 2)))


def _tv(seed=0, tid="x"):
    return TaskVector(tid, torch.randn(SPEC.numel, generator=torch.Generator().manual_seed(seed)), SPEC, {"seed": seed})


def test_key_changes_with_everything_tau_depends_on(tiny):
    store_key = TaskVectorStore.key
    s = TaskVectorStore.__new__(TaskVectorStore)
    t0, t1 = tiny.tasks[0], tiny.tasks[1]
    base = store_key(s, tiny, t0, 0)
    assert base == store_key(s, tiny, t0, 0)
    sign = torch.ones(tiny.spec.numel)
    variants = [store_key(s, tiny, t1, 0), store_key(s, tiny, t0, 1),
                store_key(s, tiny, t0, 0, config=FinetuneConfig(steps=3)),
                store_key(s, tiny, t0, 0, sign=sign), store_key(s, tiny, t0, 0, sign=-sign),
                store_key(s, tiny, t0, 0, sign=sign, projection="before_step")]
    assert len({base, *variants}) == len(variants) + 1
    # the projection only matters with a sign vector
    assert store_key(s, tiny, t0, 0, projection="before_step") == base


def test_roundtrip_and_streaming_reads(tmp_path):
    store = TaskVectorStore(tmp_path)
    tv = _tv()
    store.put("ab" * 32, tv)
    got = store.get("ab" * 32, SPEC)
    assert got.digest == tv.digest and got.meta == {"seed": 0} and got.task_id == "x"
    sv = store.open("ab" * 32, SPEC)
    assert sv.digest == tv.digest and sv.numel == SPEC.numel
    assert torch.equal(torch.cat(list(sv.chunks(8))), tv.values)
    assert torch.equal(sv.read(10, 20), tv.values[10:20])
    for name, t in SPEC.unflatten(tv.values).items():
        assert torch.equal(sv.tensor(name, SPEC), t)
    assert len(store) == 1 and store.keys() == ["ab" * 32]


def test_corrupt_entry_is_removed_not_trusted(tmp_path):
    store = TaskVectorStore(tmp_path)
    store.put("cd" * 32, _tv())
    path = store.path("cd" * 32)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(StateError):
        list(store.open("cd" * 32).chunks(16))
    assert store.get("cd" * 32, SPEC) is None
    assert not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x05\x00")   # truncated garbage
    assert store.get("cd" * 32, SPEC) is None


def test_wrong_spec_is_refused(tmp_path):
    store = TaskVectorStore(tmp_path)
    store.put("ef" * 32, _tv())
    other = ParamSpec(("a",), ((SPEC.numel,),))   # same d, different names
    with pytest.raises(ShapeMismatchError):
        store.open("ef" * 32, other)


def test_masks_roundtrip_and_stream(tmp_path):
    store = TaskVectorStore(tmp_path)
    d = 1003
    m = torch.rand(d, generator=torch.Generator().manual_seed(3)) < 0.3
    key = store.mask_key("tall", 0.4, "t7")
    store.put_mask(key, pack(m), d, "t7", {"lambda": 0.4})
    packed, meta = store.get_mask(key)
    assert torch.equal(packed, pack(m)) and meta["d"] == d and meta["meta"]["lambda"] == 0.4
    assert torch.equal(torch.cat(list(store.open_mask(key).chunks(16))), pack(m))
    with pytest.raises(ShapeMismatchError):
        store.put_mask(key, pack(m)[:-1], d)
    assert len(store) == 0   # masks are not counted as task vectors


def _writer(root, key, seed):
    TaskVectorStore(root).put(key, _tv(seed))


def test_concurrent_writers_of_one_key(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), "aa" * 32, 5)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert store_files(tmp_path) == 1   # no temporary file left behind
    assert TaskVectorStore(tmp_path).get("aa" * 32, SPEC).digest == _tv(5).digest


def store_files(root):
    return sum(1 for p in root.rglob("*") if p.is_file())


def test_store_serves_finetune_bits(tmp_path, tiny):
    store = TaskVectorStore(tmp_path)
    task = tiny.tasks[0]
    tv = finetune(tiny, task, seed=0)
    key = store.key(tiny, task, 0)
    store.put(key, tv)
    assert store.get(key, tiny.spec).digest == tv.digest


def _hold_claim(root, key, ready, release, tv=None):
    store = TaskVectorStore(root)
    with store.claim(key) as mine:
        assert mine
        ready.set()
        release.wait(30)
        if tv is not None:
            store.put(key, tv)


def test_claim_is_exclusive_across_processes_and_released(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_claim, args=(str(tmp_path), "ee" * 32, ready, release))
    p.start()
    assert ready.wait(30)
    store = TaskVectorStore(tmp_path)
    with store.claim("ee" * 32) as mine:
        assert mine is False               # held by the child
    with store.claim("ff" * 32) as mine:
        assert mine is True                # other keys are free
    release.set()
    p.join(30)
    assert p.exitcode == 0
    with store.claim("ee" * 32) as mine:
        assert mine is True                # released when the holder is done
    assert store.keys() == []              # lock files are not entries


def test_a_run_waits_for_a_task_claimed_elsewhere_instead_of_recomputing_it(tmp_path, tiny, monkeypatch):
    from clamu_helpers import parallel
    store = TaskVectorStore(tmp_path)
    first = tiny.tasks[0]
    key = store.key(tiny, first, 0)
    tv = finetune(tiny, first, seed=0)
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_claim, args=(str(tmp_path), key, ready, release, tv))
    p.start()
    assert ready.wait(30)
    computed = []

    def recording(setting, task, **kw):
        computed.append(task.task_id)
        if len(computed) == len(tiny.tasks) - 1:
            release.set()                  # the other process finishes while we work
        return finetune(setting, task, **kw)

    monkeypatch.setattr(parallel, "finetune", recording)
    got = parallel.run_finetunes(tiny, tiny.task_ids, seed=0, store=store, progress=False)
    p.join(30)
    assert first.task_id not in computed and len(computed) == len(tiny.tasks) - 1
    assert got[first.task_id].digest == tv.digest and list(got) == tiny.task_ids


def _fill(root, out, delay):
    import time
    from clamu_helpers import parallel
    from clamu_helpers.settings.synthetic import SyntheticSetting
    tiny = SyntheticSetting(tasks=8)

    def slow(setting, task, **kw):
        time.sleep(delay)
        with open(out, "a") as f:
            f.write(task.task_id + "\n")
        return finetune(setting, task, **kw)

    parallel.finetune = slow
    res = parallel.run_finetunes(tiny, tiny.task_ids, seed=0, store=TaskVectorStore(root), progress=False)
    with open(out + ".hashes", "a") as f:
        f.write(",".join(tv.digest for tv in res.values()) + "\n")


def test_two_runs_on_one_store_split_the_work(tmp_path, tiny):
    ctx = mp.get_context("fork")
    log = str(tmp_path / "computed")
    procs = [ctx.Process(target=_fill, args=(str(tmp_path / "store"), log, 0.2)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    computed = open(log).read().split()
    assert sorted(computed) == sorted(tiny.task_ids)   # every task once: no finetune was repeated
    hashes = open(log + ".hashes").read().split()
    serial = ",".join(tv.digest for tv in (finetune(tiny, t, seed=0) for t in tiny.tasks))
    assert hashes == [serial, serial]
