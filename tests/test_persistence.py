"""Saving and loading a system: round trips for every method, and every way a state can be bad."""
import hashlib
import json
from dataclasses import replace
import os
from pathlib import Path

import pytest
import torch

from clamu_helpers import persistence
from clamu_helpers.core.errors import ShapeMismatchError, StateError
from clamu_helpers.methods import METHODS
from clamu_helpers.settings.base import FinetuneConfig
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers.unlearning.system import UnlearningSystem

def make(setting, name, ids=None):
    """A fitted system; slow methods declare fast test parameters (``Method.test_params``)."""
    return UnlearningSystem(setting, name, **METHODS[name].test_params).fit(ids)


@pytest.fixture(scope="module")
def small():
    return SyntheticSetting(tasks=4)


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    """A merge system (and one local) saved once; tests copy the folder before damaging it."""
    out = {}
    for name in ("merge", "local"):
        system = make(small, name)
        d = tmp_path_factory.mktemp(f"saved-{name}")
        system.save(d)
        out[name] = (system, d)
    return out


def copy_state(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def current_folder(d: Path) -> Path:
    return d / json.loads((d / "current.json").read_text())["state"]


def resign(d: Path) -> None:
    """Recompute the manifest and pointer after an edit (a consistent state from elsewhere)."""
    folder = current_folder(d)
    manifest = json.loads((folder / "manifest.json").read_text())
    for fname, rec in manifest["files"].items():
        data = (folder / fname).read_bytes()
        rec.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    mbytes = json.dumps(manifest).encode()
    (folder / "manifest.json").write_bytes(mbytes)
    ptr = json.loads((d / "current.json").read_text())
    ptr["manifest_sha256"] = hashlib.sha256(mbytes).hexdigest()
    (d / "current.json").write_text(json.dumps(ptr))


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_round_trip_every_method(name, small, tmp_path):
    system = make(small, name)
    system.unlearn([small.task_ids[1]])
    info = system.save(tmp_path / "st")
    assert info["digest"] == system.served_digest()
    loaded = UnlearningSystem.load(tmp_path / "st", small)
    assert loaded.method.name == name and loaded.method.params == system.method.params
    assert loaded.served_digest() == system.served_digest()
    assert loaded.ledger.digest() == system.ledger.digest()
    assert loaded.unlearned == system.unlearned
    assert loaded.fit_costs == system.fit_costs and loaded.unlearn_costs == system.unlearn_costs
    assert sorted(loaded.vectors) == sorted(system.vectors)
    for tid in small.task_ids:  # every served model, bit for bit
        assert torch.equal(loaded.weights_for(tid), system.weights_for(tid)), tid
    # the loaded system keeps working: unlearning there equals unlearning here
    loaded.unlearn([small.task_ids[2]])
    system.unlearn([small.task_ids[2]])
    assert loaded.served_digest() == system.served_digest()


def test_resave_replaces_and_keeps_one_folder(small, tmp_path):
    system = make(small, "merge")
    d = tmp_path / "st"
    first = system.save(d)
    system.unlearn(["s00"])
    second = system.save(d)
    assert first["state"] != second["state"]
    assert sorted(p.name for p in d.iterdir()) == ["current.json", second["state"]]
    assert UnlearningSystem.load(d, small).served_digest() == second["digest"] != first["digest"]


def test_only_json_and_safetensors_no_pickle(saved):
    for _, d in saved.values():
        files = [p for p in d.rglob("*") if p.is_file()]
        assert files and {p.suffix for p in files} <= {".json", ".safetensors"}
        for p in files:
            data = p.read_bytes()
            # pickle protocol 2+ starts with 0x80 <proto>; torch.save zips start with PK
            assert not data.startswith(b"\x80") and not data.startswith(b"PK"), p
            assert b"torch._utils" not in data and b"__reduce__" not in data, p
        for p in files:
            if p.suffix == ".json":
                json.loads(p.read_text())  # plain JSON


def test_state_json_records_what_the_brief_lists(saved):
    system, d = saved["merge"]
    meta = json.loads((current_folder(d) / "state.json").read_text())
    assert meta["format"] == persistence.FORMAT
    assert meta["setting"]["name"] == "synthetic" and meta["setting"]["describe"]["tasks"] == 4
    assert meta["method"] == {"name": "merge", "params": system.method.params, "meta": {}}
    assert meta["ledger"]["hashes"] == system.ledger.hashes
    assert meta["fingerprint"] == system.fingerprint
    assert meta["digests"]["served"] == system.served_digest()
    assert set(json.loads((current_folder(d) / "manifest.json").read_text())["files"]) == {
        "ledger.safetensors", "method.safetensors", "vectors.safetensors", "state.json"}


# -- damaged states ---------------------------------------------------------------------------
@pytest.mark.parametrize("fname", ["ledger.safetensors", "vectors.safetensors", "state.json", "method.safetensors"])
def test_truncated_file(saved, tmp_path, small, fname):
    d = copy_state(saved["local"][1], tmp_path / "st")
    path = current_folder(d) / fname
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match=rf"{fname}.*truncated"):
        UnlearningSystem.load(d, small)


@pytest.mark.parametrize("fname", ["ledger.safetensors", "vectors.safetensors", "state.json"])
def test_flipped_bit(saved, tmp_path, small, fname):
    d = copy_state(saved["local"][1], tmp_path / "st")
    path = current_folder(d) / fname
    data = bytearray(path.read_bytes())
    data[len(data) - 3] ^= 0x10  # inside the tensor payload / JSON body
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match=rf"{fname}.*checksum mismatch"):
        UnlearningSystem.load(d, small)


def test_flipped_bit_in_manifest_or_pointer(saved, tmp_path, small):
    d = copy_state(saved["merge"][1], tmp_path / "a")
    m = current_folder(d) / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"sha256"', b'"sha257"', 1))
    with pytest.raises(StateError, match=r"manifest.json.*differs"):
        UnlearningSystem.load(d, small)
    d = copy_state(saved["merge"][1], tmp_path / "b")
    p = d / "current.json"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(StateError, match=r"current.json is corrupt"):
        UnlearningSystem.load(d, small)


def test_missing_file(saved, tmp_path, small):
    d = copy_state(saved["merge"][1], tmp_path / "st")
    (current_folder(d) / "method.safetensors").unlink()
    with pytest.raises(StateError, match=r"method.safetensors is missing"):
        UnlearningSystem.load(d, small)


def test_no_state_and_unexpected_files(saved, tmp_path, small):
    with pytest.raises(StateError, match="not a directory"):
        UnlearningSystem.load(tmp_path / "nothing", small)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StateError, match="current.json is missing"):
        UnlearningSystem.load(tmp_path / "empty", small)
    d = copy_state(saved["merge"][1], tmp_path / "st")
    (current_folder(d) / "payload.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(StateError, match=r"does not list.*payload.pkl"):
        UnlearningSystem.load(d, small)


def test_refuses_to_save_into_a_foreign_folder(small, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StateError, match=r"refusing to save.*notes.txt"):
        make(small, "merge").save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_wrong_spec(saved, tmp_path):
    other = SyntheticSetting(tasks=4, dim=8)
    with pytest.raises(ShapeMismatchError, match=r"state.json.*another parameter spec.*d=.*d="):
        UnlearningSystem.load(saved["merge"][1], other)


def test_other_setting_hyperparameters_or_data(saved):
    lr = SyntheticSetting(tasks=4, finetune=FinetuneConfig(steps=15, lr=2e-2, batch_size=8))
    with pytest.raises(StateError, match=r"state.json.*finetune: saved"):
        UnlearningSystem.load(saved["merge"][1], lr)
    seed = SyntheticSetting(tasks=4, seed=1)
    with pytest.raises(StateError, match=r"seed: saved 0, here 1.*M0 differ.*training data"):
        UnlearningSystem.load(saved["merge"][1], seed)
    fewer = SyntheticSetting(tasks=3)
    with pytest.raises(StateError, match=r"lacks merged tasks \['s03'\]"):
        UnlearningSystem.load(saved["merge"][1], fewer)


def test_edited_fingerprint_needs_resigning(saved, tmp_path, small):
    d = copy_state(saved["merge"][1], tmp_path / "st")
    sj = current_folder(d) / "state.json"
    meta = json.loads(sj.read_text())
    meta["fingerprint"]["torch"] = "0.0.1-elsewhere"
    meta["fingerprint"]["machine"] = "riscv"
    sj.write_text(json.dumps(meta))
    with pytest.raises(StateError, match=r"state.json.*(truncated|too long|checksum)"):
        UnlearningSystem.load(d, small)
    resign(d)  # now a consistent state produced in another environment
    with pytest.raises(StateError, match=r"state.json.*another environment.*machine: saved 'riscv'.*"
                                         r"torch: saved '0.0.1-elsewhere'.*allow_fingerprint_mismatch"):
        UnlearningSystem.load(d, small)
    with pytest.warns(RuntimeWarning, match="serving only"):
        served = UnlearningSystem.load(d, small, allow_fingerprint_mismatch=True)
    assert served.served_digest() == saved["merge"][0].served_digest()
    assert served.fingerprint["machine"] == "riscv"  # what the state was produced under


def _edit_state(d: Path, edit) -> dict:
    sj = current_folder(d) / "state.json"
    meta = json.loads(sj.read_text())
    edit(meta)
    sj.write_text(json.dumps(meta))
    resign(d)
    return meta


def test_a_state_from_a_processor_with_other_kernels_is_refused_before_any_retrain(saved, tmp_path, small,
                                                                                 monkeypatch):
    from clamu_helpers import system as system_module
    from clamu_helpers.core.errors import ExactnessError
    here = saved["merge"][0].fingerprint
    other = {"cpu_capability": "AVX512" if here["cpu_capability"] != "AVX512" else "AVX2",
             "cpu_flags": sorted(set(here["cpu_flags"] or []) ^ {"avx512f", "avx512_vnni"})}
    d = copy_state(saved["merge"][1], tmp_path / "st")
    _edit_state(d, lambda meta: meta["fingerprint"].update(other))
    with pytest.raises(StateError, match="another environment") as e:
        UnlearningSystem.load(d, small)
    for k, v in other.items():
        assert f"{k}: saved {v!r}, here {here[k]!r}" in str(e.value)
    with pytest.warns(RuntimeWarning, match="serving only"):
        served = UnlearningSystem.load(d, small, allow_fingerprint_mismatch=True)
    calls = []
    monkeypatch.setattr(system_module, "run_finetunes", lambda *a, **k: calls.append(a) or {})
    with pytest.raises(ExactnessError, match=r"cpu_capability: merged with .*here") as e:
        served.unlearn([small.task_ids[0]])
    assert "cpu_flags: merged with" in str(e.value)
    assert not calls and not served.unlearned   # refused up front: nothing was retrained


def test_a_state_saved_before_the_cpu_kernel_fields_loads_and_unlearns(saved, tmp_path, small):
    from clamu_helpers.runtime.determinism import cpu_kernels
    d = copy_state(saved["merge"][1], tmp_path / "st")
    meta = _edit_state(d, lambda meta: [meta["fingerprint"].pop(k) for k in cpu_kernels()])
    assert not set(cpu_kernels()) & set(meta["fingerprint"])
    old = UnlearningSystem.load(d, small)
    old.unlearn([small.task_ids[0]])
    assert old.served_digest() == make(small, "merge", small.task_ids[1:]).served_digest()


def test_a_state_saved_before_fused_existed_loads_with_a_fused_false_setting(tmp_path):
    legacy_cfg = FinetuneConfig(steps=15, lr=1e-2, batch_size=8, fused=False)   # the per-tensor Adam of old
    setting = SyntheticSetting(tasks=3, finetune=legacy_cfg)
    make(setting, "merge").save(tmp_path / "st")
    _edit_state(tmp_path / "st", lambda meta: meta["setting"]["finetune"].pop("fused"))   # as written then
    with pytest.raises(StateError, match=r"finetune: saved .*'fused': False.*here .*'fused': True.*"
                                         r"before FinetuneConfig.fused existed"):
        UnlearningSystem.load(tmp_path / "st", SyntheticSetting(tasks=3))   # today's default: fused
    old = UnlearningSystem.load(tmp_path / "st", SyntheticSetting(tasks=3, finetune=legacy_cfg))
    old.unlearn([setting.task_ids[0]])
    assert old.served_digest() == make(setting, "merge", setting.task_ids[1:]).served_digest()


def test_a_bf16_state_loaded_where_the_setting_resolves_to_float32_says_how(tmp_path):
    """A system finetuned in bf16 (the cpu profile's "auto" on a processor with native bfloat16),
    loaded where the setting resolves to float32: refused, naming CLAMU_PRECISION."""
    bf16 = FinetuneConfig(steps=15, lr=1e-2, batch_size=8, precision="bf16")
    make(SyntheticSetting(tasks=3, finetune=bf16), "merge").save(tmp_path / "st")
    with pytest.raises(StateError, match=r"finetuned in bf16 and this setting resolves to float32.*"
                                         r"export CLAMU_PRECISION=bf16"):
        UnlearningSystem.load(tmp_path / "st", SyntheticSetting(tasks=3, finetune=replace(bf16, precision="float32")))
    assert UnlearningSystem.load(tmp_path / "st", SyntheticSetting(tasks=3, finetune=bf16)).served_digest()


def test_mismatched_served_digest_is_caught(saved, tmp_path, small):
    d = copy_state(saved["merge"][1], tmp_path / "st")
    sj = current_folder(d) / "state.json"
    meta = json.loads(sj.read_text())
    meta["digests"]["served"] = "0" * 64
    sj.write_text(json.dumps(meta))
    resign(d)
    with pytest.raises(StateError, match="rebuilt system serves digest"):
        UnlearningSystem.load(d, small)


def test_leftovers_of_interrupted_saves_are_cleaned(saved, tmp_path, small):
    d = copy_state(saved["merge"][1], tmp_path / "st")
    keep = current_folder(d).name
    (d / ".tmp-state-000009-1-ab").mkdir()
    (d / ".tmp-state-000009-1-ab" / "ledger.safetensors").write_bytes(b"half")
    copy_state(current_folder(d), d / "state-000007")  # unreferenced (crash before commit)
    (d / ".current.json.1-ab").write_text("{")
    loaded = UnlearningSystem.load(d, small)
    assert loaded.served_digest() == saved["merge"][0].served_digest()
    assert sorted(p.name for p in d.iterdir()) == ["current.json", keep]


def test_unlearn_durably_is_idempotent(small, tmp_path):
    d = tmp_path / "st"
    system = make(small, "merge")
    system.save(d)
    r1 = persistence.unlearn_durably(system, ["s01"], d)
    assert r1["unlearned"] == ["s01"] and r1["already_unlearned"] == []
    again = UnlearningSystem.load(d, small)
    r2 = persistence.unlearn_durably(again, ["s01", "s02"], d)
    assert r2["already_unlearned"] == ["s01"] and r2["unlearned"] == ["s02"]
    assert UnlearningSystem.load(d, small).served_digest() == make(small, "merge", ["s00", "s03"]).served_digest()


def test_purge_task_vectors_from_the_store(small, tmp_path):
    store = TaskVectorStore(tmp_path / "store")
    system = UnlearningSystem(small, "merge", store=store).fit()
    assert len(store) == 4
    store.put_mask(store.mask_key("tall", "x"), torch.zeros(small.spec.numel // 8 + 1, dtype=torch.uint8)[
        : (small.spec.numel + 7) // 8], small.spec.numel, task_id="s00")
    stale = store.root / "ab" / ".cd.safetensors.host.1.abc.tmp"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half a vector")
    os.utime(stale, (1, 1))
    system.unlearn(["s02"])
    removed = store.purge(small.name, ["s02"])
    assert len(removed) == 3 and len(store) == 3  # τ of s02, the mask, the stale temporary
    assert not stale.exists() and not list((store.root / "masks").rglob("*.safetensors"))
    assert store.purge("another-setting", ["s00"]) == [] and len(store) == 3
    # the purged τ is not needed by anything: the remaining system still audits from scratch
    assert system.served_digest() == make(small, "merge", ["s00", "s01", "s03"]).served_digest()


def test_save_is_refused_for_a_non_json_method_state(small, tmp_path, monkeypatch):
    system = make(small, "merge")
    monkeypatch.setattr(type(system.method), "state", lambda self, s: ({}, {"bad": object()}))
    with pytest.raises(StateError, match="not plain JSON"):
        system.save(tmp_path / "st")
    assert not (tmp_path / "st" / "current.json").exists()
    assert os.listdir(tmp_path / "st") == []
