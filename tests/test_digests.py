"""Digests that name their algorithm (clamu_helpers.core.digests), and what was stored before them.

``tests/fixtures/legacy_state`` holds two systems (merge and TALL on the synthetic setting, 6
tasks, one unlearned) saved by the kit at commit 56e20d3, when every τ_t digest was bare
SHA-256 hex and receipts were format 1: they must load, verify, keep their served digests and
unlearn further, exactly.
"""
import hashlib
import os
import json
import shutil
from pathlib import Path

import pytest
import torch

from clamu_helpers import FinetuneConfig, UnlearningSystem, digests, get_setting
from clamu_helpers.core.errors import ExactnessError, StateError
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.core.params import ParamSpec
from clamu_helpers.unlearning.receipts import check_chain
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers.scaleout.streaming import stream_merge
from clamu_helpers.core.taskvector import TaskVector

LEGACY = Path(__file__).parent / "fixtures" / "legacy_state"
SPEC = ParamSpec(("w",), ((64,),))


def _tv(i, task="t"):
    return TaskVector(f"{task}{i}", torch.randn(64, generator=torch.Generator().manual_seed(i)), SPEC)


def _old_sha256(t: torch.Tensor) -> str:
    """The kit's tensor hash before this module, written out independently."""
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_the_default_is_blake3_named_and_every_algorithm_hashes_the_same_preimage():
    import blake3
    v = _tv(1).values
    assert digests.DEFAULT == "blake3" and _tv(1).digest.startswith("blake3:")
    pre = f"{v.dtype}|{tuple(v.shape)}|".encode() + v.numpy().tobytes()
    assert digests.tensor(v, "blake3") == "blake3:" + blake3.blake3(pre).hexdigest()
    assert digests.tensor(v, "sha256") == "sha256:" + hashlib.sha256(pre).hexdigest()
    assert digests.tensor(v, "legacy") == _old_sha256(v)    # bare hex, exactly the old value
    assert digests.same(digests.tensor(v, "sha256"), _old_sha256(v))
    assert not digests.same(digests.tensor(v, "blake3"), digests.tensor(v, "sha256"))


def test_blake3_on_every_core_gives_the_one_thread_digest():
    import blake3
    v = torch.randn(3_000_001, generator=torch.Generator().manual_seed(5))   # > 1 MiB: the threaded path
    pre = f"{v.dtype}|{tuple(v.shape)}|".encode() + v.numpy().tobytes()
    assert digests.tensor(v) == "blake3:" + blake3.blake3(pre, max_threads=1).hexdigest()


def test_parse_names_the_algorithm_and_refuses_what_is_not_a_digest():
    h = "ab" * 32
    assert digests.parse(h) == ("sha256", h) and digests.format_of(h) == "legacy"
    assert digests.parse("blake3:" + h) == ("blake3", h) and digests.format_of("blake3:" + h) == "blake3"
    for bad in ("", "ab" * 31, "blake3:" + "zz" * 32, "blake3:" + h + "00", 42):
        with pytest.raises(ValueError):
            digests.parse(bad)
    with pytest.raises(ValueError, match="unknown or unavailable digest algorithm 'md5'"):
        MergeLedger(SPEC, digest="md5")


@pytest.mark.parametrize("recorded_in", ["blake3", "sha256", "blake2b", "legacy"])
def test_a_recorded_digest_is_checked_in_the_algorithm_it_names(recorded_in):
    a = _tv(3)
    recorded = digests.tensor(a.values, recorded_in)
    assert a.matches(recorded) and digests.matches(a.values, recorded)
    flipped = a.values.clone()
    flipped.view(torch.int32)[7] ^= 1
    assert not TaskVector("t3", flipped, SPEC).matches(recorded)


def test_a_ledger_records_and_checks_in_its_format():
    for fmt in ("blake3", "sha256", "legacy"):
        led = MergeLedger(SPEC, digest=fmt)
        led.add("a", _tv(1))
        assert led.hashes["a"] == _tv(1).digest_in(fmt)
        assert digests.format_of(led.digest()) == fmt
        bad = _tv(1).values.clone()
        bad[0] += 1.0
        with pytest.raises(ExactnessError, match="digest"):
            led.remove("a", TaskVector("t1", bad, SPEC))
        led.remove("a", _tv(1))
        assert len(led) == 0
    with pytest.raises(ExactnessError, match="different formats"):
        MergeLedger(SPEC, digest="sha256").absorb(MergeLedger(SPEC, digest="blake3"))


def test_vectors_stored_with_bare_sha256_stream_into_a_blake3_ledger_and_corruption_is_caught(tmp_path):
    store = TaskVectorStore(tmp_path)
    keys = [f"{i:02d}" * 32 for i in range(3)]
    for k, i in zip(keys, range(3)):
        store.put(k, _tv(i))
        path = store.path(k)   # rewrite the header as the old store wrote it: "sha256", bare hex
        from safetensors import safe_open
        from safetensors.torch import save_file
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["meta"])
            tau = f.get_tensor("tau")
        meta["sha256"] = _old_sha256(tau)
        del meta["digest"]
        save_file({"tau": tau}, str(path), {"meta": json.dumps(meta)})
    assert store.open(keys[0], SPEC).digest == _old_sha256(_tv(0).values)
    assert store.get(keys[0], SPEC).matches(store.open(keys[0], SPEC).digest)
    led = stream_merge(store, keys, SPEC, chunk=16)
    assert led.digest() == MergeLedger.from_vectors([_tv(i) for i in range(3)]).digest()
    assert all(h.startswith("blake3:") for h in led.hashes.values())
    data = bytearray(store.path(keys[1]).read_bytes())   # one flipped bit in the stored values
    data[-5] ^= 1
    store.path(keys[1]).write_bytes(bytes(data))
    with pytest.raises((StateError, ExactnessError)):
        stream_merge(store, keys, SPEC, chunk=16)


def _legacy_setting(directory):
    """The synthetic setting with the finetuning config the legacy state recorded (no ``fused``
    key: ``FinetuneConfig.from_json`` reads it as the per-tensor optimizer it was trained with)."""
    meta = _receipt_formats(directory)[1]
    return get_setting("synthetic", "smoke", 0, tasks=6, finetune=FinetuneConfig.from_json(meta["setting"]["finetune"]))


def _receipt_formats(directory):
    folder = json.loads((directory / "current.json").read_text())["state"]
    meta = json.loads((directory / folder / "state.json").read_text())
    return [r["format"] for r in meta["receipts"]], meta


@pytest.mark.parametrize("method", ["merge", "tall"])
def test_a_state_saved_before_digests_were_named_loads_verifies_and_unlearns_exactly(tmp_path, method):
    src = tmp_path / method
    shutil.copytree(LEGACY / method, src)
    formats, meta = _receipt_formats(src)
    assert formats == ["clamu-receipt/1"] and "digest" not in meta["ledger"]
    # saved before FinetuneConfig.fused (and the CPU kernel fingerprint fields) existed: its
    # τ_t were trained with the per-tensor Adam, so the setting must say fused=False
    assert "fused" not in meta["setting"]["finetune"] and "cpu_capability" not in meta["fingerprint"]
    with pytest.raises(StateError, match=r"before FinetuneConfig.fused existed.*fused=False"):
        UnlearningSystem.load(src, get_setting("synthetic", "smoke", 0, tasks=6))
    s = _legacy_setting(src)
    assert not s.finetune_config.fused
    old = UnlearningSystem.load(src, s)
    assert old.ledger.digest_format == "legacy" and old.served_digest() == meta["digests"]["served"]
    assert not check_chain(old.receipts, old.system_id, old.served_digest())
    assert all(len(h) == 64 and ":" not in h for h in old.ledger.hashes.values())

    forget = s.task_ids[2]
    out = old.unlearn([forget])
    assert out["receipt"]["format"] == "clamu-receipt/2"
    assert not check_chain(old.receipts, old.system_id, old.served_digest())   # a chain of format 1 then 2
    kept = [t for t in s.task_ids if t not in (s.task_ids[1], forget)]
    fresh = UnlearningSystem(s, method, seed=0, digest="legacy").fit(kept)
    assert old.served_digest() == fresh.served_digest()
    # the same remaining tasks under BLAKE3: the same sum, digests in another format
    blake = UnlearningSystem(s, method, seed=0).fit(kept)
    assert torch.equal(blake.ledger.tau_bar(), old.ledger.tau_bar())
    assert blake.served_digest() != old.served_digest()

    old.save(src)
    again = UnlearningSystem.load(src, s)
    assert again.served_digest() == old.served_digest() and again.ledger.digest_format == "legacy"
    assert _receipt_formats(src)[0] == ["clamu-receipt/1", "clamu-receipt/2"]


def test_an_edited_receipt_of_either_format_is_caught(tmp_path):
    shutil.copytree(LEGACY / "merge", tmp_path / "m")
    s = _legacy_setting(tmp_path / "m")
    system = UnlearningSystem.load(tmp_path / "m", s)
    system.unlearn([s.task_ids[3]])
    for i, (got, merged) in enumerate([("retrained_sha256", "merged_sha256"), ("retrained", "merged")]):
        chain = json.loads(json.dumps(system.receipts))
        task = next(iter(chain[i]["tasks"]))
        chain[i]["tasks"][task][got] = "0" * 64
        problems = check_chain(chain, system.system_id, system.served_digest())
        assert problems and f"receipt {i}" in problems[0]


def test_verify_rebuild_refits_a_state_saved_before_fused_with_its_recorded_config(tmp_path, capsys):
    """``verify --rebuild`` builds the setting with the finetuning config the state recorded, so a
    state saved before ``FinetuneConfig.fused`` existed is refitted with the per-tensor optimizer."""
    from clamu_helpers.__main__ import main
    shutil.copytree(LEGACY / "merge", tmp_path / "m")
    assert main(["verify", str(tmp_path / "m"), "--rebuild"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["rebuild"]["equal"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_hashes_without_waiting_for_the_parents_threads():
    """BLAKE3 hashes a large buffer on a Rayon thread pool; a child forked after that inherits the
    pool without its threads, and a threaded hash there would wait forever (the crash tests' zygote
    hung so once). The child hashes on one thread instead: the same digest, no hang."""
    import signal
    import time
    x = torch.randn(8_000_000)
    parent = digests.tensor(x, "blake3")          # starts the pool
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, digests.tensor(x, "blake3").encode())
        os._exit(0)
    os.close(w)
    deadline = time.time() + 60
    while time.time() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung hashing with BLAKE3")
    assert os.read(r, 200).decode() == parent
