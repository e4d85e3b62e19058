"""The unlearning system: fit → serve → unlearn → report, whatever the method.

``UnlearningSystem(setting, method="merge")`` finetunes every task deterministically from M0,
merges the task vectors into the exact :class:`MergeLedger` (τ̄ = Σ_t τ_t), and lets the
method learn what it serves on top (masks, clusters). ``unlearn(ids)`` retrains each τ_u on
u's data alone, checks its hash against the one recorded at merge time, subtracts it, and
lets the method refresh what became stale. ``served_digest()`` hashes everything served; the
audit compares it with a system fitted from scratch without the forgotten tasks.

``device`` (default: the setting's, i.e. where M0 lives; CPU when none) is where the work
runs: finetuning, retraining, mask optimisation, evaluation and the served model
(:meth:`model_for`). What must stay exact lives on the CPU whatever the device: θ0, the
ledger, every τ_t (hashed as it comes back from the device), masks and clusters; weights are
composed there and moved to the device to be served or scored. The ledger quantises on the
CPU because each τ_t has to come back to the CPU to be hashed and stored anyway.

One pipeline at every size. For a method that reads τ_t one at a time (``streams_vectors``:
merging, SIFT-Masks, TALL, EMR, TIES, Consensus, cluster merges and ClAMU, clustered or not,
unless they keep their τ_t), ``fit`` finetunes and merges :data:`FIT_CHUNK` tasks at a time
into a store and the method reads each τ_t back from it, checked against the ledger; a refresh
that rebuilds from every remaining τ_t retrains them a chunk at a time the same way
(:meth:`retrain` with ``stream``). The store is the system's ``store`` (on disk: memory stays
flat in T, the paper's size) or, without one, a :class:`~clamu_helpers.training.memory_store.MemoryStore`
that lives in RAM for that one fit or refresh: the same code, the same bits. Methods that keep
their τ_t (``local``, ``vectors="keep"``) get them all at once.

Over 300 lines on purpose: the one object users drive (fit, serve, unlearn, report, save and
load) keeps its whole life cycle in one place.
"""
from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from dataclasses import asdict
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from ..runtime.costs import Costs
from ..runtime.determinism import fingerprint_diff, fingerprint_of
from ..runtime.device import resolve as resolve_device
from . import receipts as receipts_
from ..core.errors import DuplicateTaskError, ExactnessError, StateError, UnknownTaskError
from ..core.ledger import MergeLedger
from ..methods import Method, get_method
from ..methods.context import MethodContext
from ..training.parallel import run_finetunes, store_keys
from ..training.memory_store import MemoryStore
from ..training.store import StoredVectors
from ..settings.base import Setting
from .state import SystemState, restore, state_of
from ..core.taskvector import TaskVector


class UnlearningSystem:
    """One object, one life cycle: ``fit``, ``weights_for``/``model_for``, ``unlearn``,
    ``evaluate``, ``report``. ``method`` is a name from :data:`clamu_helpers.methods.METHODS`
    (``merge``, ``local``, …) or a :class:`Method`; extra keyword arguments go to the method.
    ``backend`` ("serial", "processes", "ray"), ``workers`` and ``ray_address`` choose where
    finetunes run (bit-identical results on every backend); ``store`` caches finished ones.
    ``device`` ("cpu", "cuda", "cuda:1"; default: the setting's): where the system computes
    (the module docstring says what lives where); M0 is moved there. ``digest``: the format the
    ledger records τ_t digests in (default :data:`clamu_helpers.core.digests.DEFAULT`, BLAKE3; a
    loaded system keeps the one it was saved with)."""

    def __init__(self, setting: Setting, method: str | Method = "merge", seed: int = 0, store=None,
                 backend: str = "serial", progress: bool = False, workers: int = 2,
                 ray_address: str | None = None, device: str | torch.device | None = None, digest: str | None = None,
                 **method_params):
        self.device = resolve_device(device) if device is not None else setting.device
        self.setting = setting.to(self.device)
        self.method = get_method(method, **method_params) if isinstance(method, str) else method
        self.seed = int(seed)
        self.store = store
        self.backend = backend
        self.workers, self.ray_address = int(workers), ray_address  # for backend "processes" / "ray"
        self.progress = progress
        self.ledger = MergeLedger(setting.spec, digest=digest)   # digest: the format of τ_t digests (default BLAKE3)
        self.vectors: dict[str, TaskVector] = {}
        self.unlearned: list[str] = []
        self.fit_costs = Costs()
        self.unlearn_costs = Costs()
        self.fingerprint = fingerprint_of(setting.finetune_config, self.device)
        self._tau_cache: tuple[str, torch.Tensor] | None = None
        #: one hash-chained receipt per unlearning request (:mod:`clamu_helpers.unlearning.receipts`)
        self.system_id = receipts_.new_system_id()
        self.receipts: list[dict] = []
        #: (directory, state) loaded from or last saved as: a save there after another one is refused
        self.saved_at: tuple[str, str] | None = None
        #: set by ``load`` when the saved chain does not verify: unlearning is refused until
        #: the chain verifies or the state is loaded with ``allow_broken_receipts=True``
        self.receipts_problem: str | None = None

    # -- finetuning --------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self.setting.finetune_config.steps

    def finetune_options(self) -> dict:
        """What τ_t depends on beyond (setting, task, seed): the device and the method's options
        (SIFT's sign), as ``run_finetunes`` and the store's keys take them."""
        return {"device": str(self.device), **self.method.finetune_kwargs(self.context())}

    def finetune(self, task_ids: Sequence[str], use_store: bool = True, desc: str = "finetune",
                 store=None) -> dict[str, TaskVector]:
        """τ_t for each id with this system's seed and :meth:`finetune_options` (``use_store``:
        read and file them in ``store``, default this system's)."""
        store = (self.store if store is None else store) if use_store else None
        return run_finetunes(self.setting, task_ids, seed=self.seed, backend=self.backend,
                             store=store, progress=self.progress, desc=desc,
                             workers=self.workers, ray_address=self.ray_address, **self.finetune_options())

    def fit(self, task_ids: Iterable[str] | None = None) -> "UnlearningSystem":
        """Finetune every task (default: all of the setting's), merge, and fit the method."""
        if len(self.ledger):
            raise RuntimeError("this system is already fitted; create a new one to fit again")
        ids = [str(t) for t in (self.setting.task_ids if task_ids is None else task_ids)]
        _check_unique(ids)
        for t in ids:
            self.setting.task(t)  # raises UnknownTaskError with the setting's name
        t0 = time.perf_counter()
        if self.method.streams_vectors and not self.method.keeps_vectors:
            vectors = self._finetune_streamed(ids)
        else:
            vectors = self.finetune(ids, desc=f"finetune {self.setting.name}")
            self.ledger.add_many((tid, vectors[tid]) for tid in ids)
        if self.method.keeps_vectors:
            self.vectors = dict(vectors)
        self.fit_costs.round(len(ids), self.steps)
        self.method.fit(self.context(self.fit_costs), vectors)
        self.fit_costs.seconds += time.perf_counter() - t0
        return self

    def _finetune_streamed(self, ids: list[str]) -> "StoredVectors":
        """Finetune into the store :data:`FIT_CHUNK` tasks at a time, merging each chunk and
        letting it go; ``fit`` then reads the τ_t back one at a time. Peak memory: the ledger
        and one chunk, whatever T (``benchmarks/bench_fit_memory.py``); the same ledger integers
        as merging every τ_t at once (the sum is exact and order-free)."""
        store = self._store_for_streaming()
        return self._in_chunks(ids, f"finetune {self.setting.name}", True, store,
                               lambda chunk, vecs, keys: self.ledger.add_many((t, vecs[t]) for t in chunk))

    def _store_for_streaming(self):
        """This system's store, or a :class:`MemoryStore` for one fit or refresh (let go with
        the lazy mapping over it, so a system without a store holds no τ_t after its fit)."""
        return self.store if self.store is not None else MemoryStore()

    def _in_chunks(self, ids: list[str], desc: str, use_store: bool, store, each) -> "StoredVectors":
        """Finetune ``ids`` :data:`FIT_CHUNK` at a time (reading and filing them in ``store``
        when ``use_store``), call ``each(chunk, vectors, keys)`` on every chunk before letting it
        go, and return all of them read lazily from ``store``."""
        keys = store_keys(self.setting, ids, self.seed, store, **self.finetune_options())
        for start in range(0, len(ids), FIT_CHUNK):
            chunk = ids[start:start + FIT_CHUNK]
            vecs = self.finetune(chunk, use_store=use_store, store=store,
                                 desc=f"{desc} ({start + len(chunk)}/{len(ids)})")
            each(chunk, vecs, keys)
            del vecs
        return StoredVectors(store, keys, self.setting.spec, self.ledger)

    def context(self, costs: Costs | None = None) -> MethodContext:
        """What the method may use in one call (:class:`~clamu_helpers.methods.context.MethodContext`);
        ``costs``: the account that call charges (fitting or unlearning; None: it charges nothing)."""
        return MethodContext(self, costs)

    # -- serving ---------------------------------------------------------------------------------
    def served_params(self) -> dict:
        """The method's served hyperparameters now (a ``"val"`` choice: the value chosen)."""
        return self.method.served_params(self.context())

    def mask_density(self) -> float | None:
        """Mean fraction of parameters inside the served masks (None: no masks)."""
        return self.method.mask_density(self.context())

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.ledger.task_ids

    @property
    def tau_bar(self) -> torch.Tensor:
        """τ̄ (float32), recomputed from the ledger only when its contents change (keyed on
        :attr:`MergeLedger.stamp`, not on a hash of the sum)."""
        if self._tau_cache is None or self._tau_cache[0] != self.ledger.stamp:
            self._tau_cache = (self.ledger.stamp, self.ledger.tau_bar())
        return self._tau_cache[1]

    def weights_for(self, task_id: str) -> torch.Tensor:
        """The flat weights served to ``task_id`` (a forgotten or unknown task gets what the
        method serves to tasks without their own state)."""
        return self.method.weights_for(self.context(), str(task_id))

    def model_for(self, task_id: str) -> nn.Module:
        """A copy of M0 holding the weights served to ``task_id``, on :attr:`device`."""
        model = copy.deepcopy(self.setting.model)
        return self.setting.spec.load_into(model, self.weights_for(task_id))

    def served_digest(self) -> str:
        """SHA-256 of the whole served state: τ̄ (ledger) plus the method's state."""
        h = hashlib.sha256(self.ledger.digest().encode())
        h.update(self.method.state_digest(self.context()).encode())
        return h.hexdigest()

    # -- unlearning --------------------------------------------------------------------------
    def retrain(self, task_ids: Sequence[str], desc: str = "retrain", stream: bool = False) -> Mapping[str, TaskVector]:
        """Retrain τ_t of merged tasks deterministically (never from the store), check each
        SHA-256 against the one the ledger recorded at merge time, and charge one round of
        finetunes to ``unlearn_costs`` (n·E gradient steps, E parallel steps: they run side by
        side). The one place where unlearning retrains; raises :class:`ExactnessError` (nothing
        charged) when a retrained vector differs from the merged one.

        ``stream`` (a refresh that reads the τ_t one at a time): with more than
        :data:`FIT_CHUNK` tasks, retrain a chunk at a time, file each verified chunk in the store
        (this system's, else one in memory for this refresh; bit for bit the merged τ_t) and let
        it go, and return them read lazily from the store, as a streamed fit does."""
        ids = list(task_ids)
        if not ids:
            return {}
        self.check_environment()
        if not (stream and len(ids) > FIT_CHUNK):
            got = self.finetune(ids, use_store=False, desc=desc)
            self.ledger.check_hashes({t: got[t] for t in ids}, "retrained task vectors")
        else:
            store = self._store_for_streaming()

            def verify_and_file(chunk, part, keys):
                self.ledger.check_hashes({t: part[t] for t in chunk}, "retrained task vectors")
                for t in chunk:
                    if keys[t] not in store:
                        store.put(keys[t], part[t])
            got = self._in_chunks(ids, desc, False, store, verify_and_file)
        self.unlearn_costs.round(len(ids), self.steps)
        return got

    def check_environment(self) -> None:
        """Refuse (:class:`ExactnessError`) to retrain where the environment differs from the one
        the merged τ_t were trained in (another GPU model, CUDA, cuDNN, torch, thread count,
        precision, a processor whose instruction set or vendor makes ATen, MKL or oneDNN pick
        other kernels...): the retrain would not reproduce them bit for bit. Checked before any
        work; every differing field is named with both values. Fields the recorded fingerprint
        lacks (a system saved before they were recorded) are not compared
        (:func:`~clamu_helpers.runtime.determinism.fingerprint_diff`)."""
        diff = fingerprint_diff(self.fingerprint, fingerprint_of(self.setting.finetune_config, self.device))
        if diff:
            listing = ", ".join(f"{k}: merged with {a!r}, here {b!r}" for k, (a, b) in diff.items())
            raise ExactnessError(f"refusing to retrain: this system's task vectors were trained in another "
                                 f"environment ({listing}), so retrained τ_u would not match the merged ones. "
                                 f"Unlearn where they were trained (same device model, CUDA, torch, threads, "
                                 f"precision, processor instruction set). Nothing was unlearned.")

    def unlearn(self, task_ids: Iterable[str]) -> dict:
        """Forget ``task_ids``: retrain each τ_u deterministically, verify its hash, subtract it
        from τ̄, then refresh the method. All or nothing: on any error the state is unchanged (a
        retrained τ_u whose hash differs from the one recorded at fit raises
        :class:`~clamu_helpers.ExactnessError`). Returns the ids, the retrained hashes (each the
        recorded one), the served digest after and the receipt."""
        ids = [str(t) for t in task_ids]
        if not ids:
            raise ValueError("unlearn() needs at least one task id")
        _check_unique(ids)
        for t in ids:
            if t not in self.ledger:
                why = "was already unlearned" if t in self.unlearned else "is not merged in this system"
                raise UnknownTaskError(f"cannot unlearn task {t!r}: it {why}")
        if self.receipts_problem:
            raise StateError(f"refusing to unlearn: the receipt chain of this system does not verify "
                             f"({self.receipts_problem}); run `python -m clamu_helpers verify DIR`, or load "
                             f"with allow_broken_receipts=True to go on anyway")
        before, merged = self.served_digest(), {t: self.ledger.hashes[t] for t in ids}
        spent_before = copy.deepcopy(self.unlearn_costs)
        t0 = time.perf_counter()
        backup = (copy.deepcopy(self.ledger), dict(self.vectors), copy.deepcopy(self.method),
                  list(self.unlearned), copy.deepcopy(self.unlearn_costs))
        try:
            retrained = self.retrain(ids) if self.method.retrains else {t: self.vectors[t] for t in ids}
            self.ledger.remove_many((t, retrained[t]) for t in ids)
            for t in ids:
                self.vectors.pop(t, None)
                self.unlearned.append(t)
            self.method.refresh(self.context(self.unlearn_costs), ids, retrained)
        except BaseException:
            self.ledger, self.vectors, self.method, self.unlearned, self.unlearn_costs = backup
            raise
        self.unlearn_costs.seconds += time.perf_counter() - t0
        after = self.served_digest()
        got = {t: retrained[t].digest_in(self.ledger.digest_format) for t in ids}
        receipt = receipts_.make(self.receipts, self.system_id, ids, got, merged,
                                 before, after, {"name": self.method.name, "params": self.method.params},
                                 self.fingerprint, asdict(self.unlearn_costs.since(spent_before)))
        self.receipts.append(receipt)
        return {"unlearned": ids, "hashes": got, "digest": after, "receipt": receipt}

    # -- evaluation and report ----------------------------------------------------------------
    def evaluate(self, split: str = "test", task_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per task: its served weights scored on its own ``split`` data."""
        ids = list(self.setting.task_ids if task_ids is None else task_ids)
        rows, cache, ctx = [], {}, self.context()
        for tid in ids:
            task = self.setting.task(tid)
            group = self.method.group_of(ctx, tid)
            if group not in cache:   # composed on the CPU, moved to the device once per group
                w = self.weights_for(tid).to(self.device)
                cache = {group: w} if len(cache) > 64 else {**cache, group: w}
            x, y = task.split(split)
            rows.append({"task_id": tid, "source": task.source, "group": group,
                         "merged": tid in self.ledger, "unlearned": tid in self.unlearned,
                         self.setting.metric_name: self.setting.score(cache[group], x, y)})
        return pd.DataFrame(rows)

    def storage_bytes(self) -> int:
        return int(self.method.storage_bytes(self.context()))

    def report(self) -> dict:
        return {"setting": self.setting.name, "profile": self.setting.profile, "method": self.method.name,
                "method_params": self.method.params, "tasks": len(self.ledger), "unlearned": list(self.unlearned),
                "storage_bytes": self.storage_bytes(), "fit": asdict(self.fit_costs),
                "unlearn": asdict(self.unlearn_costs), "digest": self.served_digest(),
                "device": str(self.device), "fingerprint": self.fingerprint}

    # -- state and persistence (unlearning.state, unlearning.persistence) -----------------------
    def to_state(self) -> SystemState:
        """The whole state as a value (tensors + JSON): what :meth:`save` writes."""
        return state_of(self)

    @classmethod
    def from_state(cls, state: SystemState, setting: Setting, *, allow_broken_receipts: bool = False,
                   **kw) -> "UnlearningSystem":
        """Rebuild a system from :meth:`to_state`'s value on ``setting`` (``kw``: store, backend,
        progress, device); it must serve the recorded digest (:func:`clamu_helpers.unlearning.state.restore`)."""
        return restore(cls, state, setting, allow_broken_receipts=allow_broken_receipts, **kw)

    def save(self, directory) -> dict:
        """Save the whole state to ``directory`` atomically (safetensors + JSON, checksummed).
        An unlearning request is durable once this returns."""
        from . import persistence
        return persistence.save(self, directory)

    @classmethod
    def load(cls, directory, setting: Setting, *, store=None, backend: str = "serial", progress: bool = False,
             allow_fingerprint_mismatch: bool = False, cleanup: bool = True, allow_broken_receipts: bool = False,
             device=None) -> "UnlearningSystem":
        """Rebuild a saved system on ``setting``, verifying checksums, spec, setting and
        environment fingerprint (``allow_fingerprint_mismatch=True``: serving only; a receipt
        chain that does not verify makes it refuse unlearning unless ``allow_broken_receipts``)."""
        from . import persistence
        state = persistence.read(directory, setting, allow_fingerprint_mismatch=allow_fingerprint_mismatch,
                                 cleanup=cleanup, device=device)
        system = cls.from_state(state, setting, allow_broken_receipts=allow_broken_receipts, store=store,
                                backend=backend, progress=progress, device=device)
        system.saved_at = (str(Path(directory).resolve()), state.source.name)
        return system



#: tasks finetuned and merged at a time when a fit streams (:attr:`Method.streams_vectors`)
FIT_CHUNK = 32


def _check_unique(ids: Sequence[str]) -> None:
    seen, dup = set(), []
    for t in ids:
        if t in seen:
            dup.append(t)
        seen.add(t)
    if dup:
        raise DuplicateTaskError(f"task ids repeated in one request: {sorted(set(dup))}")
