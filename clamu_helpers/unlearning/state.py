"""The state of an :class:`~clamu_helpers.unlearning.system.UnlearningSystem` as a value.

:class:`SystemState` is everything needed to rebuild a system bit for bit: three groups of
tensors (the ledger's exact int64 sum, the method's state, the kept τ_t) and one JSON document
(setting identity, spec, method name + params + meta, task ids and hashes, unlearned ids, costs,
environment fingerprint, receipts, digests). :func:`state_of` takes it from a system;
:func:`restore` rebuilds a system from it and checks that the rebuilt one serves the recorded
digest. :mod:`clamu_helpers.unlearning.persistence` only writes and reads this value (safetensors + JSON,
atomic, checksummed); neither module imports the system (``restore`` receives its class).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..runtime.costs import Costs
from ..core.errors import ClamuError, StateError
from ..core.ledger import MergeLedger
from ..methods.base import saved_method
from ..core.taskvector import TaskVector, sha256_tensor

if TYPE_CHECKING:
    from ..settings.base import Setting

FORMAT = "clamu-state/1"
#: the tensor groups of a state, each saved as one safetensors file of this name
TENSOR_FILES = ("ledger.safetensors", "method.safetensors", "vectors.safetensors")


@dataclass
class SystemState:
    """``files``: tensor group name (:data:`TENSOR_FILES`) → name → tensor; ``meta``: the JSON
    document; ``source``: where it was read from (error messages name it), None in memory."""

    files: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, Any]
    source: Path | None = None

    def where(self, name: str = "state.json") -> str:
        return str(self.source / name) if self.source is not None else f"the state ({name})"


def tensors_for_file(tensors: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """CPU copies with their own storage (safetensors refuses shared storage); a non-tensor
    entry is a :class:`StateError` naming it."""
    out = {}
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise StateError(f"cannot save {what}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v.detach().cpu().contiguous().clone()
    return out


def _recipe_json(setting) -> dict | None:
    """How ``get_setting`` rebuilds the setting (``verify --rebuild`` uses it), when it was
    built that way and its keywords are plain JSON; else None."""
    recipe = getattr(setting, "recipe", None)
    if recipe is None:
        return None
    out = {"name": recipe.name, "profile": recipe.profile, "seed": recipe.seed, "kwargs": dict(recipe.kwargs)}
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return out


def state_of(system) -> SystemState:
    """The whole state of ``system`` as a value (what :func:`clamu_helpers.unlearning.persistence.save` writes)."""
    setting, method, ctx = system.setting, system.method, system.context()
    led_tensors, led_meta = system.ledger.state()
    m_tensors, m_meta = method.state(ctx)
    vectors = {tid: tv for tid, tv in sorted(system.vectors.items())}
    merged = list(system.ledger.task_ids)
    meta = {
        "format": FORMAT,
        "setting": {"name": setting.name, "profile": setting.profile, "seed": setting.seed,
                    "describe": setting.describe(), "finetune": setting.finetune_config.to_json(),
                    "spec_digest": setting.spec.digest(), "theta0_sha256": sha256_tensor(setting.theta0),
                    "task_digests": {t: setting.task(t).digest() for t in sorted(set(merged) | set(vectors))}},
        "recipe": _recipe_json(setting),
        "spec": setting.spec.to_json(),
        "seed": system.seed,
        "method": {"name": method.name, "params": method.params, "meta": m_meta},
        "ledger": led_meta,
        "task_ids": merged,
        "vectors": {tid: {"digest": tv.digest_in(system.ledger.digest_format), "meta": tv.meta}
                    for tid, tv in vectors.items()},
        "unlearned": list(system.unlearned),
        "costs": {"fit": asdict(system.fit_costs), "unlearn": asdict(system.unlearn_costs)},
        "fingerprint": system.fingerprint,
        "system_id": system.system_id,
        "receipts": list(system.receipts),
        "digests": {"served": system.served_digest(), "ledger": system.ledger.digest(),
                    "method": method.state_digest(ctx)},
    }
    files = {"ledger.safetensors": tensors_for_file(led_tensors, "the ledger"),
             "method.safetensors": tensors_for_file(dict(m_tensors), f"the state of method {method.name!r}"),
             "vectors.safetensors": {tid: tv.values.detach().contiguous().clone() for tid, tv in vectors.items()}}
    return SystemState(files, meta)


def restore(cls, state: SystemState, setting: "Setting", *, allow_broken_receipts: bool = False, **system_kw):
    """Rebuild a system of class ``cls`` on ``setting`` from ``state`` (``system_kw``: store,
    backend, progress, device). Every mismatch is a :class:`StateError` naming the file; the
    rebuilt system must serve the recorded digest. Setting and environment compatibility are
    checked by the reader (:func:`clamu_helpers.unlearning.persistence.read`)."""
    meta, tensors = state.meta, state.files
    try:
        m = meta["method"]
        try:
            method = saved_method(m["name"], m["params"])
        except (TypeError, ValueError) as e:
            raise StateError(f"{state.where()}: cannot rebuild method {m['name']!r} with params {m['params']}: "
                             f"{e}") from None
        system = cls(setting, method, seed=meta["seed"], **system_kw)
        try:
            ledger = MergeLedger.from_state(tensors["ledger.safetensors"], meta["ledger"])
        except (KeyError, ClamuError) as e:
            raise StateError(f"{state.where('ledger.safetensors')}: cannot rebuild the ledger: {e}") from None
        if sorted(ledger.task_ids) != sorted(meta["task_ids"]) or ledger.digest() != meta["digests"]["ledger"]:
            raise StateError(f"{state.where('ledger.safetensors')}: the ledger does not match state.json's digest")
        system.ledger = ledger
        vecs = tensors["vectors.safetensors"]
        if set(vecs) != set(meta["vectors"]):
            raise StateError(f"{state.where('vectors.safetensors')} holds {sorted(vecs)[:8]}, state.json lists "
                             f"{sorted(meta['vectors'])[:8]}")
        for tid, rec in meta["vectors"].items():
            tv = TaskVector(tid, vecs[tid], setting.spec, rec["meta"])
            recorded = rec["digest"] if "digest" in rec else rec["sha256"]   # "sha256": saved before digests were named
            if not tv.matches(recorded) or (tid in ledger and not tv.matches(ledger.hashes[tid])):
                raise StateError(f"{state.where('vectors.safetensors')}: τ of task {tid!r} does not match its hash")
            system.vectors[tid] = tv
        system.unlearned = list(meta["unlearned"])
        system.fit_costs = Costs(**meta["costs"]["fit"])
        system.unlearn_costs = Costs(**meta["costs"]["unlearn"])
        system.fingerprint = dict(meta["fingerprint"])
        where = state.where("method.safetensors")
        try:
            method.load_state(system.context(), tensors["method.safetensors"], m["meta"])
        except ClamuError as e:
            raise StateError(f"{where}: method {m['name']!r} refused its state: {e}") from None
        except Exception as e:
            raise StateError(f"{where}: method {m['name']!r} cannot load its state: {e.__class__.__name__}: {e}") from None
    except (KeyError, TypeError) as e:
        raise StateError(f"{state.where()} lacks or mangles a field: {e.__class__.__name__}: {e}") from None
    digest = system.served_digest()
    if digest != meta["digests"]["served"]:
        raise StateError(f"{state.source or 'the state'}: the rebuilt system serves digest {digest[:16]}…, the saved "
                         f"one {meta['digests']['served'][:16]}… (method {m['name']!r} did not restore its state)")
    _restore_receipts(system, state, allow_broken_receipts)
    return system


def _restore_receipts(system, state: SystemState, allow_broken: bool) -> None:
    """The saved system id and receipt chain; a chain that does not verify warns, and (unless
    ``allow_broken``) leaves the system refusing to unlearn. A state saved before receipts
    existed keeps a fresh id and an empty chain."""
    from .receipts import check_chain
    meta = state.meta
    if "system_id" not in meta:
        return
    system.system_id, system.receipts = str(meta["system_id"]), list(meta.get("receipts", []))
    problems = check_chain(system.receipts, system.system_id, system.served_digest())
    if problems:
        what = f"{state.where()}: the receipt chain does not verify: {problems[0]}"
        warnings.warn(what + ("" if allow_broken else "; unlearning is refused until it verifies "
                              "(or load with allow_broken_receipts=True)"), RuntimeWarning, stacklevel=4)
        system.receipts_problem = None if allow_broken else problems[0]


__all__ = ["FORMAT", "SystemState", "TENSOR_FILES", "restore", "state_of", "tensors_for_file"]
