"""Saving and reading the state of an :class:`UnlearningSystem`: safetensors + JSON, atomic,
checksummed. This module only serialises :class:`~clamu_helpers.unlearning.state.SystemState` (what
``system.to_state()`` returns); :meth:`UnlearningSystem.load` rebuilds the system from
:func:`read`. The file-level protocol (temporary name, fsync, rename, flock) is
:mod:`clamu_helpers.core.atomic`, shared with the task-vector store.

Layout of a state directory ``D`` (single writer; a lock serialises writers and readers)::

    D/current.json           the commit pointer: which folder holds the state, and the
                             SHA-256 of that folder's manifest
    D/state-000007/
        ledger.safetensors   the exact int64 sum Σ_t q(τ_t)
        method.safetensors   the method's state tensors (masks, clusters, counts, …)
        vectors.safetensors  kept τ_t (methods with ``keeps_vectors``: ``local``, …)
        state.json           setting, spec, method name + params + meta, task ids + hashes,
                             unlearned ids, costs, environment fingerprint, digests
        manifest.json        SHA-256 and size of every other file, and the format version

Nothing is ever pickled or executed: tensors are safetensors, everything else is JSON, and
every byte is checked against the manifest before it is parsed.

**Atomicity.** :func:`save` writes a complete new folder under a temporary name
(``D/.tmp-…``), fsyncs every file and the folder, renames it to ``state-N``, fsyncs ``D``,
then replaces ``current.json`` with ``os.replace`` (atomic on POSIX) and fsyncs ``D`` again.
Only then is the previous folder deleted. A crash (SIGKILL, power loss after fsync) at any
point leaves ``current.json`` naming either the complete old or the complete new folder;
:func:`read` (:meth:`UnlearningSystem.load`) and the next :func:`save` delete leftovers (temporary folders, unreferenced
``state-N`` folders, pointer temporaries).

**Durability of an unlearning request.** :meth:`UnlearningSystem.unlearn` changes memory
only. A request is durable once :func:`save` (or :func:`unlearn_durably`) returns. After a
crash before that, the saved state still holds the task, so repeating the request simply
unlearns it again; :func:`unlearn_durably` makes the repeat idempotent (ids already unlearned
in the loaded state are skipped, not an error).

**Compatibility checks on load.** The manifest (truncation, bit flips, missing or extra
files → :class:`StateError` naming the file), the parameter spec (→
:class:`ShapeMismatchError`), the setting (name, profile, seed, finetuning config, the
SHA-256 of M0's weights and of every merged task's training data → :class:`StateError`; a
finetuning config saved before ``FinetuneConfig.fused`` existed reads as ``fused=False``), the
environment fingerprint (→ :class:`StateError` listing the fields that differ, both values;
fields the saved fingerprint lacks, such as the CPU kernel fields of states saved before they
were recorded, are not compared), and finally
that the rebuilt system's ``served_digest()`` equals the one saved.
``allow_fingerprint_mismatch=True`` loads a state produced in another environment **for
serving only**: the served bits are the saved ones, but retraining there may not reproduce
τ_u, so an unlearning request may be refused (``ExactnessError``) — it never corrupts τ̄.

(Over 300 lines on purpose: the commit protocol (temporary folder, manifest, pointer), its
clean-up after a crash and the checks on reading are one protocol and are reviewed together.)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import torch
from safetensors.torch import load_file, save_file

from ..core.atomic import checkpoint, fsync_dir, fsync_file, locked, sha256_file, write_bytes
from ..runtime.determinism import fingerprint_diff, fingerprint_of
from ..core.errors import DuplicateTaskError, ShapeMismatchError, StateError, is_storage_failure, storage_error
from ..settings.base import FinetuneConfig
from .state import FORMAT, TENSOR_FILES, SystemState
from ..core.taskvector import sha256_tensor

if TYPE_CHECKING:
    from ..settings.base import Setting

POINTER = "current.json"
STATE_PREFIX = "state-"
TMP_PREFIX = ".tmp-"
POINTER_TMP_PREFIX = ".current.json."
JSON_FILES = ("state.json",)
MANIFEST = "manifest.json"
_STATE_RE = re.compile(r"^state-(\d{6,})$")


def _json_bytes(obj, what: str) -> bytes:
    try:
        return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise StateError(f"cannot save {what}: it is not plain JSON ({e})") from None


# -- the commit pointer and clean-up -------------------------------------------------------------
def _read_pointer(directory: Path) -> dict | None:
    path = directory / POINTER
    if not path.exists():
        return None
    try:
        ptr = json.loads(path.read_bytes())
        folder, manifest_sha = ptr["state"], ptr["manifest_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"{path} is corrupt: {e.__class__.__name__}: {e}") from None
    if ptr.get("format") != FORMAT:
        raise StateError(f"{path} has format {ptr.get('format')!r}; this version reads {FORMAT!r}")
    if not isinstance(folder, str) or not _STATE_RE.match(folder) or not isinstance(manifest_sha, str):
        raise StateError(f"{path} is corrupt: it names {folder!r}, not a state-NNNNNN folder")
    return ptr


def _ours(name: str) -> bool:
    return (name == POINTER or bool(_STATE_RE.match(name)) or name.startswith(TMP_PREFIX)
            or name.startswith(POINTER_TMP_PREFIX))


def _cleanup(directory: Path, keep: str | None) -> list[str]:
    """Delete leftovers of interrupted saves and superseded states; never touches ``keep``."""
    removed = []
    for p in sorted(directory.iterdir()):
        name = p.name
        stale = ((name.startswith(TMP_PREFIX) or (_STATE_RE.match(name) and name != keep)) and p.is_dir()
                 and not p.is_symlink()) or (name.startswith(POINTER_TMP_PREFIX) and p.is_file())
        if stale:
            checkpoint(f"cleanup:{name}")
            if p.is_dir():
                # rename first so a half-deleted folder is never mistaken for a state folder
                trash = directory / f"{TMP_PREFIX}trash-{secrets.token_hex(4)}"
                if not name.startswith(TMP_PREFIX):
                    os.rename(p, trash)
                    checkpoint(f"cleanup:{name}:renamed")
                    p = trash
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(name)
    if removed:
        fsync_dir(directory)
    return removed


# -- save ---------------------------------------------------------------------------------------
def save(system, directory: str | os.PathLike) -> dict:
    """Save ``system`` to ``directory`` atomically (see the module docstring).

    Returns ``{"directory", "state", "digest"}``: the folder now current and the served digest.
    Refuses (``StateError``) a non-empty directory that is not a state directory.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(directory, e, "a saved state") from e
    state = system.to_state()  # before the lock: fails early on a non-JSON method state
    files, meta = state.files, state.meta
    state_json = _json_bytes(meta, f"the state of system (method {system.method.name!r})")
    with locked(directory):
        foreign = sorted(p.name for p in directory.iterdir() if not _ours(p.name))
        if foreign:
            raise StateError(f"refusing to save into {directory}: it holds files that are not part of a saved "
                             f"state ({foreign[:5]}); use an empty or a state directory")
        ptr = _read_pointer(directory)
        origin = getattr(system, "saved_at", None)
        if ptr and origin and origin[0] == str(directory.resolve()) and origin[1] != ptr["state"]:
            raise StateError(f"{directory} changed since this system was loaded from it (it was {origin[1]}, "
                             f"another process saved {ptr['state']} since): saving would drop that process's "
                             "requests. Load the directory again and repeat the request "
                             "(clamu_helpers.unlearning.shared_state.unlearn_saved does both under the directory's lock)")
        tmp = None
        try:
            _cleanup(directory, keep=ptr["state"] if ptr else None)
            numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _STATE_RE.match(p.name))]
            name = f"{STATE_PREFIX}{max(numbers, default=0) + 1:06d}"
            tmp = directory / f"{TMP_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
            name = _write_state(directory, tmp, name, files, state_json, meta)
        except Exception as e:
            if not is_storage_failure(e):
                raise
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)   # free what the failed write took
            raise storage_error(directory, e, "a saved state") from e
        _cleanup(directory, keep=name)
        checkpoint("done")
    system.saved_at = (str(directory.resolve()), name)
    return {"directory": str(directory), "state": name, "digest": meta["digests"]["served"]}


def _write_state(directory: Path, tmp: Path, name: str, files: dict, state_json: bytes, meta: dict) -> str:
    """The steps of :func:`save` that write (under its lock): the state folder ``tmp``, renamed
    to ``name``, then the pointer; returns ``name``. Until the pointer's rename the old state is
    the current one."""
    tmp.mkdir()
    checkpoint("mkdir")
    manifest = {"format": FORMAT, "files": {}}
    for fname in TENSOR_FILES:
        path = tmp / fname
        save_file(files[fname], str(path), metadata={"format": FORMAT})
        checkpoint(f"write:{fname}")
        fsync_file(path)
        manifest["files"][fname] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    write_bytes(tmp / "state.json", state_json, "write:state.json")
    manifest["files"]["state.json"] = {"sha256": hashlib.sha256(state_json).hexdigest(),
                                       "bytes": len(state_json)}
    checkpoint("write:state.json")
    manifest_bytes = _json_bytes(manifest, "the manifest")
    write_bytes(tmp / MANIFEST, manifest_bytes, "write:manifest.json")
    fsync_dir(tmp)
    checkpoint("fsync")
    os.rename(tmp, directory / name)
    fsync_dir(directory)
    checkpoint("rename")
    pointer = {"format": FORMAT, "state": name, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
               "digest": meta["digests"]["served"]}
    ptr_tmp = directory / f"{POINTER_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    write_bytes(ptr_tmp, _json_bytes(pointer, "the pointer"), "write:pointer")
    checkpoint("pointer-written")
    os.replace(ptr_tmp, directory / POINTER)
    fsync_dir(directory)
    checkpoint("commit")
    return name


# -- verify and read -------------------------------------------------------------------------------
def verify(directory: str | os.PathLike) -> tuple[Path, dict]:
    """Check the current state folder against its manifest; return (folder, state.json content).

    Every problem is a :class:`StateError` naming the file: missing, truncated, checksum
    mismatch (bit flip or edit), a file the manifest does not list, an unknown format.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise StateError(f"no saved state at {directory}: not a directory")
    ptr = _read_pointer(directory)
    if ptr is None:
        raise StateError(f"no saved state in {directory}: {POINTER} is missing "
                         f"(never saved, or the first save was interrupted)")
    folder = directory / ptr["state"]
    if not folder.is_dir():
        raise StateError(f"{directory / POINTER} names {ptr['state']}, which is missing")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise StateError(f"{mpath} is missing")
    mbytes = mpath.read_bytes()
    if hashlib.sha256(mbytes).hexdigest() != ptr["manifest_sha256"]:
        raise StateError(f"{mpath}: SHA-256 differs from the one recorded in {POINTER} "
                         f"(corrupt, truncated or edited manifest)")
    try:
        manifest = json.loads(mbytes)
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"{mpath} is corrupt: {e}") from None
    if manifest.get("format") != FORMAT:
        raise StateError(f"{mpath} has format {manifest.get('format')!r}; this version reads {FORMAT!r}")
    expected = set(TENSOR_FILES) | set(JSON_FILES)
    if set(listed) != expected:
        raise StateError(f"{mpath} lists {sorted(listed)}, expected {sorted(expected)}")
    present = {p.name for p in folder.iterdir()}
    extra = sorted(present - expected - {MANIFEST})
    if extra:
        raise StateError(f"{folder} holds files the manifest does not list: {extra} (tampering?); refusing to load")
    for fname in sorted(expected):
        path, rec = folder / fname, listed[fname]
        if not path.is_file():
            raise StateError(f"{path} is missing (listed in the manifest)")
        size = path.stat().st_size
        if size != rec["bytes"]:
            how = "truncated" if size < rec["bytes"] else "too long"
            raise StateError(f"{path} is {how}: {size} bytes, the manifest says {rec['bytes']}")
        if sha256_file(path) != rec["sha256"]:
            raise StateError(f"{path}: SHA-256 checksum mismatch with the manifest (bit flip or edit)")
    try:
        meta = json.loads((folder / "state.json").read_bytes())
    except ValueError as e:
        raise StateError(f"{folder / 'state.json'} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise StateError(f"{folder / 'state.json'} has format {meta.get('format')!r}; expected {FORMAT!r}")
    return folder, meta


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors parses only; it never executes anything
        raise StateError(f"{path} is not a readable safetensors file: {e}") from None


def _check_setting(meta: dict, setting: "Setting", where: Path) -> None:
    s = meta["setting"]
    if s["spec_digest"] != setting.spec.digest():
        saved = meta["spec"]
        raise ShapeMismatchError(
            f"{where / 'state.json'} was saved for another parameter spec: d="
            f"{sum(_numel(sh) for sh in saved['shapes'])} in {len(saved['names'])} tensors "
            f"(spec digest {s['spec_digest'][:12]}…); setting {setting.name!r} has d={setting.spec.numel} in "
            f"{len(setting.spec.names)} tensors (digest {setting.spec.digest()[:12]}…): another architecture "
            f"or set of trained parameters")
    problems = []
    for key, here in (("name", setting.name), ("profile", setting.profile), ("seed", setting.seed)):
        if s[key] != here:
            problems.append(f"{key}: saved {s[key]!r}, here {here!r}")
    saved_cfg, here_cfg = FinetuneConfig.from_json(s["finetune"]).to_json(), setting.finetune_config.to_json()
    if saved_cfg != here_cfg:
        problems.append(f"finetune: saved {saved_cfg!r}, here {here_cfg!r}")
        if "fused" not in s["finetune"] and {**saved_cfg, "fused": here_cfg.get("fused")} == here_cfg:
            problems.append("it was saved before FinetuneConfig.fused existed and finetuned with fused=False: "
                            "build the setting with finetune=FinetuneConfig(..., fused=False) "
                            "(FinetuneConfig.from_json of the saved config)")
        if saved_cfg.get("precision") != here_cfg.get("precision"):
            problems.append(f"it was finetuned in {saved_cfg.get('precision')} and this setting resolves to "
                            f"{here_cfg.get('precision')} (a profile's \"auto\" is bf16 only on a processor with "
                            f"native bfloat16): export CLAMU_PRECISION={saved_cfg.get('precision')} to load it; a "
                            f"retrain still needs the processor it was trained on (the fingerprint)")
    if s["theta0_sha256"] != sha256_tensor(setting.theta0):
        problems.append("the pretrained weights M0 differ")
    known = set(setting.task_ids)
    missing = [t for t in s["task_digests"] if t not in known]
    if missing:
        problems.append(f"the setting lacks merged tasks {missing[:8]}")
    changed = [t for t, dg in s["task_digests"].items() if t in known and setting.task(t).digest() != dg]
    if changed:
        problems.append(f"the training data of tasks {changed[:8]} changed")
    if problems:
        raise StateError(f"{where / 'state.json'} was saved with another setting than {setting.name!r}: "
                         + "; ".join(problems))


def _numel(shape) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


def read(directory: str | os.PathLike, setting: "Setting", *, allow_fingerprint_mismatch: bool = False,
         cleanup: bool = True, device=None) -> SystemState:
    """The state saved in ``directory``, checked (see the module docstring) against ``setting``
    and this environment; :meth:`UnlearningSystem.load` rebuilds the system from it.

    ``allow_fingerprint_mismatch=True``: read a state from another environment for serving
    only (a warning is issued; unlearning there may be refused, never silently wrong).
    ``cleanup=False``: leave leftovers of interrupted saves in place (read-only media).
    ``device``: where the system will compute (default: the setting's); the saved fingerprint
    names the device it was fitted on, and another GPU model is a mismatch.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise StateError(f"no saved state at {directory}: not a directory")
    with locked(directory):
        ptr = _read_pointer(directory)
        if cleanup and ptr is not None:
            try:
                _cleanup(directory, keep=ptr["state"])
            except OSError:   # read-only media: the leftovers stay, and are never read
                pass
        folder, meta = verify(directory)
        try:
            _check_setting(meta, setting, folder)
            here = fingerprint_of(setting.finetune_config, device if device is not None else setting.device)
            diff = fingerprint_diff(meta["fingerprint"], here)
        except (KeyError, TypeError) as e:
            raise StateError(f"{folder / 'state.json'} lacks or mangles a field: {e.__class__.__name__}: {e}") from None
        if diff:
            listing = ", ".join(f"{k}: saved {a!r}, here {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
            msg = (f"{folder / 'state.json'} was produced in another environment ({listing}): retraining "
                   f"here may not reproduce τ_u bit for bit")
            if not allow_fingerprint_mismatch:
                raise StateError(msg + "; pass allow_fingerprint_mismatch=True to load it for serving only")
            warnings.warn(msg + " (loaded for serving only)", RuntimeWarning, stacklevel=3)
        return SystemState({f: _load_tensors(folder / f) for f in TENSOR_FILES}, meta, folder)


# -- requests and purging -------------------------------------------------------------------------
def unlearn_durably(system, task_ids: Iterable[str], directory: str | os.PathLike) -> dict:
    """Unlearn ``task_ids`` and :func:`save`; the request is durable when this returns.

    Idempotent, so a request interrupted by a crash can simply be repeated on the reloaded
    state: ids this state has already unlearned are skipped (listed in
    ``"already_unlearned"``); the others are unlearned and the state is saved.
    """
    ids = [str(t) for t in task_ids]
    if not ids:
        raise ValueError("unlearn_durably() needs at least one task id")
    dup = sorted({t for t in ids if ids.count(t) > 1})
    if dup:
        raise DuplicateTaskError(f"task ids repeated in one request: {dup}")
    done = [t for t in ids if t in system.unlearned and t not in system.ledger]
    todo = [t for t in ids if t not in done]
    report = system.unlearn(todo) if todo else {"unlearned": [], "digest": system.served_digest()}
    report["already_unlearned"] = done
    report["saved"] = save(system, directory)
    return report


__all__ = ["FORMAT", "read", "save", "unlearn_durably", "verify"]
