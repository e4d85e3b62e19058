"""Unlearning receipts: a hash chain that survives saves and reloads, and catches tampering."""
import hashlib
import json
import random
import warnings
from pathlib import Path

import pytest

from clamu_helpers import persistence, receipts
from clamu_helpers.__main__ import main
from clamu_helpers.core.errors import StateError
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.unlearning.system import UnlearningSystem


@pytest.fixture(scope="module")
def setting():
    return SyntheticSetting(tasks=8)


def _fit(setting, method="merge"):
    return UnlearningSystem(setting, method).fit()


@pytest.mark.parametrize("method", ["merge", "sift"])
def test_chain_verifies_after_random_requests_saves_and_reloads(setting, method, tmp_path):
    rnd = random.Random(f"receipts-{method}")
    system = _fit(setting, method)
    left = list(setting.task_ids)
    for step in range(4):
        ids = rnd.sample(left[1:], rnd.randint(1, 2))
        before = system.served_digest()
        report = system.unlearn(ids)
        r = report["receipt"]
        assert r["forgotten"] == ids and r["served_before"] == before and r["served_after"] == report["digest"]
        assert all(h["retrained"] == h["merged"] for h in r["tasks"].values())
        assert r["costs"]["gradient_steps"] == len(ids) * setting.finetune_config.steps   # this request only
        left = [t for t in left if t not in ids]
        if rnd.random() < 0.7:
            system.save(tmp_path)
            system = UnlearningSystem.load(tmp_path, setting)
        assert receipts.check_chain(system.receipts, system.system_id, system.served_digest()) == []
    assert [r["index"] for r in system.receipts] == list(range(4))
    text = json.dumps(system.receipts)
    assert "values" not in text and len(text) < 4000 * 4   # ids and hashes only, no tensors


def _saved(setting, tmp_path, n=3, method="merge"):
    system = _fit(setting, method)
    for t in setting.task_ids[1:1 + n]:
        system.unlearn([t])
    system.save(tmp_path)
    return system


def _tamper(directory: Path, edit):
    """Edit state.json's receipts and re-sign manifest and pointer, as a tool (or an attacker)
    that rewrites the state consistently would: the manifest check passes, the chain must not."""
    ptr = json.loads((directory / "current.json").read_text())
    folder = directory / ptr["state"]
    meta = json.loads((folder / "state.json").read_text())
    edit(meta)
    data = json.dumps(meta).encode()
    (folder / "state.json").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    mbytes = json.dumps(manifest).encode()
    (folder / "manifest.json").write_bytes(mbytes)
    ptr["manifest_sha256"] = hashlib.sha256(mbytes).hexdigest()
    (directory / "current.json").write_text(json.dumps(ptr))


def _edit_forgotten(meta):
    meta["receipts"][1]["forgotten"] = ["s07"]


def _remove_middle(meta):
    del meta["receipts"][1]


def _reorder(meta):
    meta["receipts"][0], meta["receipts"][1] = meta["receipts"][1], meta["receipts"][0]


def _remove_last(meta):
    meta["receipts"].pop()


def _rehash_edit(meta):   # edit and recompute its own hash: the next receipt's link breaks
    r = meta["receipts"][1]
    r["utc"] = "2020-01-01T00:00:00+00:00"
    r["sha256"] = receipts.receipt_hash(r)


@pytest.mark.parametrize("edit, first_bad, says", [
    (_edit_forgotten, 1, "edited"),
    (_rehash_edit, 2, "out of chain"),
    (_remove_middle, 1, "out of chain"),
    (_reorder, 0, "out of chain"),
    (_remove_last, None, "the state changed after its last receipt"),
])
def test_each_kind_of_tampering_is_caught_and_named(setting, tmp_path, capsys, edit, first_bad, says):
    system = _saved(setting, tmp_path)
    ids = [r["request_id"] for r in system.receipts]
    assert main(["verify", str(tmp_path)]) == 0
    capsys.readouterr()
    _tamper(tmp_path, edit)
    assert main(["verify", str(tmp_path)]) == 1
    out = json.loads(capsys.readouterr().out)
    problem = out["problems"][0]
    assert says in problem and not out["ok"]
    if first_bad is not None:
        assert problem.startswith(f"receipt {first_bad} (")
    if edit is _edit_forgotten:
        assert ids[1] in problem
    # loading warns and refuses to unlearn more, unless the user overrides
    with pytest.warns(RuntimeWarning, match="receipt chain does not verify"):
        loaded = UnlearningSystem.load(tmp_path, setting)
    with pytest.raises(StateError, match="refusing to unlearn: the receipt chain"):
        loaded.unlearn([setting.task_ids[-1]])
    assert loaded.served_digest() == system.served_digest()      # refused, nothing changed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        forced = UnlearningSystem.load(tmp_path, setting, allow_broken_receipts=True)
    forced.unlearn([setting.task_ids[-1]])


def test_a_receipt_from_another_system_is_caught(setting, tmp_path, capsys):
    other = _saved(setting, tmp_path / "other", n=1)
    _saved(setting, tmp_path / "mine", n=2)

    def graft(meta):
        meta["receipts"][1] = other.receipts[0]
    _tamper(tmp_path / "mine", graft)
    assert main(["verify", str(tmp_path / "mine")]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any("belongs to another system" in p for p in problems) and problems[0].startswith("receipt 1 ")


def test_receipts_lists_them_and_verify_rebuild_refits_from_scratch(tmp_path, capsys):
    from clamu_helpers.settings import get_setting
    setting = get_setting("synthetic", "smoke", 0, tasks=9)   # its recipe (keywords too) is saved
    system = _saved(setting, tmp_path, n=2, method="sift")
    assert main(["receipts", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert all(r["request_id"] in listing for r in system.receipts) and "s01" in listing and "s02" in listing
    assert main(["verify", str(tmp_path), "--rebuild"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["rebuild"]["equal"] and out["rebuild"]["remaining_tasks"] == 7
    assert out["rebuild"]["digest_from_scratch"] == system.receipts[-1]["served_after"]


def test_a_fresh_state_has_no_receipts_and_verifies(setting, tmp_path, capsys):
    _fit(setting).save(tmp_path)
    assert main(["receipts", str(tmp_path)]) == 0
    assert "no unlearning requests yet" in capsys.readouterr().out
    assert main(["verify", str(tmp_path)]) == 0


def test_a_failed_request_leaves_no_receipt(setting):
    system = _fit(setting)
    with pytest.raises(Exception):
        system.unlearn(["nope"])
    assert system.receipts == []
