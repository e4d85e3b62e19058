"""Partial ledgers: τ̄ over a share of the tasks, computed anywhere, reduced exactly.

The ledger sums integers, so the ledgers of any partition of the tasks, combined in any tree
shape and order, hold the integers (and the digest) of the one-machine merge: the merge is a
reduction a cluster can share without giving up a bit. A :class:`PartialLedger` is a
:class:`~clamu_helpers.core.ledger.MergeLedger` plus the environment fingerprint its task vectors
were trained in (so a combined merge cannot silently mix vectors no single environment can
retrain). It is saved as one safetensors file (the int64 sum, with the spec, grid, task
hashes, fingerprint and the sum's digest as JSON in the header), written atomically.

:func:`combine` refuses, with a specific error and nothing combined, a task that appears in
two parts, another parameter spec, another grid (``scale_bits``/``max_tasks``) or another
fingerprint. :func:`merge_stored` builds partial ledgers of stored task vectors on worker
processes or Ray tasks and reduces them (what ``stream_merge(..., backend=...)`` runs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..core.atomic import write_safetensors
from ..core.errors import DuplicateTaskError, ExactnessError, StateError
from ..core.ledger import MergeLedger
from ..core.params import ParamSpec
from ..core import digests
from ..core.taskvector import TaskVector

FORMAT = "clamu-partial-ledger-v1"
#: backends :func:`merge_stored` runs on
BACKENDS = ("serial", "processes", "ray")


@dataclass
class PartialLedger:
    """A ledger over some of the tasks, and the fingerprint of the environment that trained them
    (None: not recorded; combining requires equal fingerprints, None included)."""

    ledger: MergeLedger
    fingerprint: dict | None = None

    @classmethod
    def of(cls, vectors: Iterable[TaskVector], spec: ParamSpec | None = None, **ledger_kw) -> "PartialLedger":
        """The partial merge of ``vectors`` (their fingerprints must agree)."""
        vectors = list(vectors)
        led = MergeLedger.from_vectors(vectors, spec, **ledger_kw)
        return cls(led, _agreeing([(f"task {tv.task_id!r}", tv.meta.get("fingerprint")) for tv in vectors]))

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.ledger.task_ids

    def digest(self) -> str:
        return self.ledger.digest()

    # -- files --------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = self.ledger.state()
        meta = {"format": FORMAT, **meta, "fingerprint": self.fingerprint,
                "sum_digest": digests.tensor(tensors["ledger_sum"])}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict, where: str = "partial ledger") -> "PartialLedger":
        if meta.get("format") != FORMAT:
            raise StateError(f"{where}: not a partial ledger (format {meta.get('format')!r}, expected {FORMAT!r})")
        recorded = meta.get("sum_digest", meta.get("sum_sha256"))   # sum_sha256: written before digests were named
        if "ledger_sum" not in tensors or not isinstance(recorded, str) or not digests.matches(tensors["ledger_sum"], recorded):
            raise StateError(f"{where}: the sum does not match its recorded digest (corrupt or truncated)")
        return cls(MergeLedger.from_state(tensors, meta), meta.get("fingerprint"))

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (one ``.safetensors`` file) atomically; returns the path."""
        path = Path(path)
        tensors, meta = self.to_state()
        write_safetensors(tensors, path, {"partial": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PartialLedger":
        from safetensors import safe_open
        path = Path(path)
        if not path.is_file():
            raise StateError(f"no partial ledger at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["partial"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:   # a truncated or foreign file: safetensors raises its own types
            raise StateError(f"{path}: cannot read a partial ledger ({e.__class__.__name__}: {e})") from None
        return cls.from_state(tensors, meta, str(path))


def _agreeing(pairs: Sequence[tuple[str, dict | None]]) -> dict | None:
    """The one fingerprint of (name, fingerprint) pairs; ExactnessError naming two that differ."""
    if not pairs:
        return None
    first_name, first = pairs[0]
    for name, fp in pairs[1:]:
        if fp != first:
            diff = sorted(k for k in set(first or {}) | set(fp or {}) if (first or {}).get(k) != (fp or {}).get(k))
            raise ExactnessError(f"{first_name} and {name} come from different environments (fields {diff}): a merge "
                                 f"of both could not be unlearned exactly in any one environment")
    return first


def common_fingerprint(parts: Sequence[PartialLedger]) -> dict | None:
    return _agreeing([(f"part with tasks {list(p.task_ids)[:3]}", p.fingerprint) for p in parts])


def combine(parts: Iterable[PartialLedger]) -> PartialLedger:
    """One partial ledger holding all of ``parts`` (checked first; nothing is combined on an
    error). Combining is associative and commutative bit for bit: integer sums."""
    parts = list(parts)
    if not parts:
        raise ValueError("combine() needs at least one partial ledger")
    fp = common_fingerprint(parts)
    first = parts[0].ledger
    out = MergeLedger(first.spec, first.scale_bits, first.max_tasks, digest=first.digest_format)
    seen: dict[str, int] = {}
    for i, p in enumerate(parts):
        for t in p.task_ids:
            if t in seen:
                raise DuplicateTaskError(f"task {t!r} is in partial ledgers {seen[t]} and {i}: each task may be "
                                         f"merged once")
            seen[t] = i
    for p in parts:
        out.absorb(p.ledger)
    return PartialLedger(out, fp)


# -- distributed merge of stored task vectors --------------------------------------------------
_POOLS: dict[int, object] = {}


def _pool(n: int):
    """``n`` spawned worker processes (one thread each), kept for the next merge: start-up
    (spawn + importing torch) costs seconds, as much as merging hundreds of vectors."""
    if n not in _POOLS:
        import atexit
        import multiprocessing as mp
        import os
        from ..training.parallel import WORKER_ENV
        old = {k: os.environ.get(k) for k in WORKER_ENV}
        os.environ.update(WORKER_ENV)   # spawned workers copy the environment
        try:
            _POOLS[n] = mp.get_context("spawn").Pool(n)
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if len(_POOLS) == 1:
            atexit.register(shutdown_pools)
    return _POOLS[n]


def shutdown_pools() -> None:
    """Stop the worker processes :func:`merge_stored` keeps."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.terminate()
        pool.join()


def shares(keys: Sequence[str], n: int) -> list[list[str]]:
    """``keys`` cut into at most ``n`` contiguous, near-equal shares (none empty)."""
    n = max(1, min(int(n), len(keys)))
    q, r = divmod(len(keys), n)
    out, start = [], 0
    for i in range(n):
        stop = start + q + (i < r)
        out.append(list(keys[start:stop]))
        start = stop
    return out


def merge_share_here(root: str, keys: Sequence[str], spec_json: dict, chunk: int, ledger_kw: dict) -> PartialLedger:
    """The partial ledger of the stored vectors ``keys`` under ``root`` (each hash-checked as
    it streams), with their common fingerprint."""
    from ..training.store import TaskVectorStore, open_all
    spec = ParamSpec.from_json(spec_json)
    store = TaskVectorStore(root)
    svs = open_all(store, keys, spec)
    led = MergeLedger(spec, **ledger_kw)
    for sv in svs:
        led.add_stream(sv.task_id, lambda sv=sv: sv.chunks(chunk, verify=False), expected=sv.digest)
    fp = _agreeing([(f"task {sv.task_id!r}", (sv.meta.get("meta") or {}).get("fingerprint")) for sv in svs])
    return PartialLedger(led, fp)


def merge_share(root: str, keys: Sequence[str], spec_json: dict, chunk: int, ledger_kw: dict) -> tuple[dict, dict]:
    """Worker: :func:`merge_share_here` as (tensors, meta) of :meth:`PartialLedger.to_state`,
    what crosses the process boundary (checked by its digest on arrival)."""
    return merge_share_here(root, keys, spec_json, chunk, ledger_kw).to_state()


def run_shares(fn: Callable, jobs: Sequence[tuple], backend: str = "processes", ray_address: str | None = None,
               here: Callable | None = None) -> list:
    """``[fn(*job) for job in jobs]``, the jobs side by side on ``backend``: "serial" (here, in
    order), "processes" (this process runs the first job, ``here`` if given, while ``len(jobs) − 1``
    kept spawned processes run the others) or "ray" (one Ray task of one CPU per job, on a local
    Ray or the cluster at ``ray_address``). ``fn`` must be importable by name (a module-level
    function) and return what pickles; results come back in the order of ``jobs``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {BACKENDS}")
    here = here or fn
    if backend == "serial" or len(jobs) <= 1:
        return [here(*j) if i == 0 else fn(*j) for i, j in enumerate(jobs)]
    if backend == "processes":
        pending = _pool(len(jobs) - 1).starmap_async(fn, jobs[1:])
        mine = here(*jobs[0])
        return [mine, *pending.get()]
    import ray
    from ..training.parallel import WORKER_ENV, ray_init
    if not ray.is_initialized():
        ray_init(address=ray_address, **({} if ray_address else {"num_cpus": len(jobs)}),
                 include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1, runtime_env={"env_vars": dict(WORKER_ENV)})(fn)
    return ray.get([remote.remote(*j) for j in jobs])


def merge_stored(store, keys: Sequence[str], spec: ParamSpec, chunk: int, backend: str = "processes",
                 workers: int = 2, ray_address: str | None = None, **ledger_kw) -> PartialLedger:
    """Σ_t τ_t of stored vectors: ``workers`` shares merged on ``backend`` ("serial";
    "processes": this process and ``workers`` − 1 spawned local processes, one thread each,
    kept for the next call; "ray": Ray tasks of one CPU, on a local Ray or the cluster at
    ``ray_address``, every node seeing the store's folder), then combined here. The digest
    equals the serial ``stream_merge`` of the same keys."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {BACKENDS}")
    jobs = [(str(store.root), share, spec.to_json(), int(chunk), dict(ledger_kw)) for share in shares(keys, workers)]
    if backend == "serial" or len(jobs) <= 1:
        return combine(merge_share_here(*j) for j in jobs)
    # the driver merges the first share itself (a PartialLedger); the others arrive as states
    got = run_shares(merge_share, jobs, backend, ray_address, here=merge_share_here)
    return combine(g if isinstance(g, PartialLedger) else PartialLedger.from_state(*g, f"share {i}")
                   for i, g in enumerate(got))


__all__ = ["BACKENDS", "FORMAT", "PartialLedger", "combine", "common_fingerprint", "merge_share", "merge_share_here", "merge_stored",
           "run_shares", "shares", "shutdown_pools"]
