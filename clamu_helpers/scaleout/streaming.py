"""Merging and localizing many stored task vectors with memory independent of T.

Each τ_t is read from a :class:`~clamu_helpers.training.store.TaskVectorStore` chunk by chunk and
folded into an exact :class:`~clamu_helpers.core.ledger.MergeLedger`, so peak memory is the ledger
(int64, 2× one float32 model) plus one chunk, whatever the number of tasks T. The ledger is
bit-identical to ``MergeLedger.from_vectors`` of the same vectors (digest included).

Masks whose definition needs τ̄ take two passes over the store, and run the same code as the
in-memory methods, chunk by chunk (in memory is one chunk):

* **TALL** (:func:`stream_tall_masks`): pass 1 τ̄; pass 2 :func:`clamu_helpers.localization.masks.tall_masks`
  m_t = 1{|τ_t| > λ|τ̄ − τ_t|} on each chunk, for each λ of a grid, packed as it is computed.
* **EMR** (:func:`stream_emr`): pass 1 the ledger (ε = sign of its τ̄, zeros → −1); pass 2
  :func:`clamu_helpers.localization.emr_merging.emr_chunks`, the one EMR implementation (masks, τ_uni,
  rescalers per parameter tensor or global).

Masks and τ_uni equal the in-memory results bit for bit (with ε from the exact τ̄); rescalers
agree to float64 rounding (per-tensor sums are split where chunks split them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from ..runtime.progress import tqdm

from ..core import digests
from ..core.errors import ExactnessError
from ..core.ledger import MergeLedger
from ..localization.emr_merging import EMRResult, emr_elect, emr_finish, emr_pass, segment_sizes
from ..localization.masks import LAMBDA_GRID, tall_masks
from ..core.packing import pack_into
from ..core.params import ParamSpec
from ..training.store import CHUNK, StoredVector, TaskVectorStore, open_all  # open_all re-exported


def _check_chunk(chunk: int) -> int:
    if chunk <= 0 or chunk % 8:
        raise ValueError(f"chunk must be a positive multiple of 8 (bits pack per byte), got {chunk}")
    return int(chunk)


def _bar(items, desc: str, progress: bool):
    return tqdm(items, desc=desc, unit="task", disable=not progress, leave=False)


def stream_merge(store: TaskVectorStore, keys: Sequence[str], spec: ParamSpec, chunk: int = CHUNK,
                 ledger: MergeLedger | None = None, progress: bool = False, backend: str = "serial",
                 workers: int = 2, ray_address: str | None = None, **ledger_kw) -> MergeLedger:
    """τ̄ = Σ_t τ_t over stored task vectors, streamed: peak memory = ledger + one chunk.

    ``ledger``: add into an existing ledger (default: a new one, ``ledger_kw`` passed on).
    Every vector's SHA-256 is recomputed while streaming and must match the store's record.
    ``backend="processes"`` or ``"ray"``: ``workers`` shares of the keys are merged into partial
    ledgers side by side and combined here (:mod:`clamu_helpers.scaleout.partial`): the same integers
    and digest as ``"serial"``, with one partial ledger per worker in memory.
    """
    _check_chunk(chunk)
    if backend != "serial":
        from .partial import merge_stored
        base = ledger if ledger is not None else MergeLedger(spec, **ledger_kw)
        kw = {"scale_bits": base.scale_bits, "max_tasks": base.max_tasks, "digest": base.digest_format}
        part = merge_stored(store, list(keys), spec, chunk, backend=backend, workers=workers,
                            ray_address=ray_address, **kw)
        base.absorb(part.ledger)
        return base
    led = ledger if ledger is not None else MergeLedger(spec, **ledger_kw)
    for sv in _bar(open_all(store, keys, spec), "merge (streamed)", progress):
        led.add_stream(sv.task_id, lambda sv=sv: sv.chunks(chunk, verify=False), expected=sv.digest)
    return led


def _ledger_for(store, keys, svs, spec, chunk, ledger, progress, backend="serial", workers=2,
                ray_address=None) -> MergeLedger:
    if ledger is None:
        return stream_merge(store, list(keys), spec, chunk, progress=progress, backend=backend,
                            workers=workers, ray_address=ray_address)
    want, have = {sv.task_id: sv.digest for sv in svs}, ledger.hashes
    if set(have) != set(want) or not all(digests.same(have[t], want[t]) for t in want):
        raise ExactnessError("the given ledger does not hold exactly these stored task vectors "
                             f"({len(ledger)} merged vs {len(want)} stored, or hashes differ)")
    return ledger


def _chunks_at(sv: StoredVector, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    off = 0
    for c in sv.chunks(chunk, verify=True):
        yield off, c
        off += c.numel()


@dataclass
class TallStream:
    """TALL masks from the store: ``masks[λ][task_id]`` is a packed mask (or its store key
    when saved), over τ̄ of ``ledger``."""

    ledger: MergeLedger
    masks: dict[float, dict[str, torch.Tensor | str]] = field(default_factory=dict)


def stream_tall_masks(store: TaskVectorStore, keys: Sequence[str], spec: ParamSpec,
                      lambdas: float | Sequence[float] = LAMBDA_GRID, ledger: MergeLedger | None = None,
                      chunk: int = CHUNK, save: bool = False, progress: bool = False, backend: str = "serial",
                      workers: int = 2, ray_address: str | None = None) -> TallStream:
    """m_t = 1{|τ_t| > λ|τ̄ − τ_t|} for every stored τ_t and every λ, in two streamed passes.

    τ̄ is the ledger's float32 ``tau_bar()`` (pass 1 builds it unless ``ledger`` already holds
    exactly these tasks). ``save``: write each packed mask to the store (key from
    :meth:`TaskVectorStore.mask_key` of "tall", λ, the ledger digest and the task id) and
    return keys, keeping memory flat in T. ``backend="processes"`` or ``"ray"``: both passes are
    shared among ``workers`` (pass 1 as partial ledgers, pass 2 by tasks, each worker holding τ̄);
    the masks are the serial ones bit for bit.
    """
    _check_chunk(chunk)
    lams = [float(lambdas)] if isinstance(lambdas, (int, float)) else [float(x) for x in lambdas]
    if not lams or any(not np.isfinite(x) or x < 0 for x in lams):
        raise ValueError(f"λ must be finite and ≥ 0, got {lambdas}")
    svs = open_all(store, keys, spec)
    led = _ledger_for(store, keys, svs, spec, chunk, ledger, progress, backend, workers, ray_address)
    result = TallStream(led, {x: {} for x in lams})
    if backend == "serial":
        parts = [_tall_pass(store, svs, led.tau_bar_slice, lams, chunk, save, led.digest(), progress)]
    else:
        from .partial import run_shares, shares
        bar = led.tau_bar()
        jobs = [(str(store.root), share, spec.to_json(), bar, lams, chunk, save, led.digest())
                for share in shares(list(keys), workers)]
        parts = run_shares(tall_share, jobs, backend, ray_address)
    for part in parts:
        for lam in lams:
            result.masks[lam].update(part[lam])
    return result


def _tall_pass(store, svs, bar_of, lams, chunk, save, digest, progress) -> dict:
    """Pass 2 of TALL over ``svs``: λ → task id → packed mask (or its store key when ``save``)."""
    d, out = None, {lam: {} for lam in lams}
    for sv in _bar(svs, "pass 2: TALL masks", progress):
        d = sv.numel
        packed = [np.zeros((d + 7) // 8, dtype=np.uint8) for _ in lams]
        for off, c in _chunks_at(sv, chunk):
            bar = bar_of(off, off + c.numel())
            for buf, lam in zip(packed, lams):
                pack_into(buf, off, tall_masks(c, bar, lam))
        for lam, buf in zip(lams, packed):
            mask = torch.from_numpy(buf)
            if save:
                key = store.mask_key("tall", lam, digest, sv.task_id)
                store.put_mask(key, mask, d, sv.task_id, {"method": "tall", "lambda": lam, "ledger": digest})
                out[lam][sv.task_id] = key
            else:
                out[lam][sv.task_id] = mask
    return out


def tall_share(root: str, keys: Sequence[str], spec_json: dict, tau_bar: torch.Tensor, lams: list[float],
               chunk: int, save: bool, digest: str) -> dict:
    """Worker: pass 2 of TALL over the stored vectors ``keys`` (each hash-checked as it streams)."""
    spec = ParamSpec.from_json(spec_json)
    store = TaskVectorStore(root)
    return _tall_pass(store, open_all(store, keys, spec), lambda a, b: tau_bar[a:b], lams, chunk, save, digest,
                      False)


@dataclass
class EmrStream:
    """EMR-merging from the store: the exact ledger and the :class:`~clamu_helpers.localization.emr_merging.EMRResult`
    (ε, τ_uni, packed masks m_t and rescalers λ_t by task id)."""

    ledger: MergeLedger
    emr: EMRResult


def stream_emr(store: TaskVectorStore, keys: Sequence[str], spec: ParamSpec, chunk: int = CHUNK,
               progress: bool = False, rescaler: str = "per-tensor", ledger: MergeLedger | None = None,
               backend: str = "serial", workers: int = 2, ray_address: str | None = None) -> EmrStream:
    """EMR-merging over stored τ_t in two streamed passes: pass 1 the exact ledger (ε = sign of
    its τ̄; skipped when ``ledger`` already holds exactly these vectors), pass 2
    :func:`clamu_helpers.localization.emr_merging.emr_pass` over the vectors chunk by chunk (each hash
    checked as it streams), then :func:`~clamu_helpers.localization.emr_merging.emr_finish` here.
    ``backend="processes"`` or ``"ray"``: both passes are shared among ``workers`` (pass 2 by
    tasks: masks and numerators are per task, the maxima combine exactly); the result is the
    serial one bit for bit, rescalers included."""
    _check_chunk(chunk)
    sizes = segment_sizes(spec.numel, spec.sizes, rescaler)   # checks the rescaler before any pass
    svs = open_all(store, keys, spec)
    if not svs:
        raise ValueError("EMR needs at least one task vector")
    led = _ledger_for(store, keys, svs, spec, chunk, ledger, progress, backend, workers, ray_address)
    d = spec.numel
    eps = torch.empty(d, dtype=torch.float32, device="cpu")
    for off in range(0, d, chunk):
        eps[off:off + chunk] = emr_elect(led.tau_bar_slice(off, min(off + chunk, d)))
    if backend == "serial":
        parts = [emr_pass(((sv.task_id, _chunks_at(sv, chunk)) for sv in _bar(svs, "pass 2: EMR masks", progress)),
                          eps, sizes)]
    else:
        from .partial import run_shares, shares
        jobs = [(str(store.root), share, spec.to_json(), eps, chunk, sizes) for share in shares(list(keys), workers)]
        parts = run_shares(emr_share, jobs, backend, ray_address)
    masks, num, absmax = {}, {}, parts[0][1]
    for m, a, n in parts:
        masks.update(m)
        num.update(n)
        torch.maximum(absmax, a, out=absmax)
    return EmrStream(led, emr_finish(eps, masks, absmax, num, sizes))


def emr_share(root: str, keys: Sequence[str], spec_json: dict, eps: torch.Tensor, chunk: int,
              sizes: list[int]) -> tuple[dict, torch.Tensor, dict]:
    """Worker: :func:`~clamu_helpers.localization.emr_merging.emr_pass` over the stored vectors ``keys``."""
    spec = ParamSpec.from_json(spec_json)
    svs = open_all(TaskVectorStore(root), keys, spec)
    return emr_pass(((sv.task_id, _chunks_at(sv, chunk)) for sv in svs), eps, sizes)
