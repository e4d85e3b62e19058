"""Merging and localizing many stored task vectors with memory independent of T.

Each τ_t is read from a :class:`~clamu_helpers.store.TaskVectorStore` chunk by chunk and
folded into an exact :class:`~clamu_helpers.ledger.MergeLedger`, so peak memory is the ledger
(int64, 2× one float32 model) plus one chunk, whatever the number of tasks T. The ledger is
bit-identical to ``MergeLedger.from_vectors`` of the same vectors (digest included).

Masks whose definition needs τ̄ take two passes over the store:

* **TALL** (:func:`stream_tall_masks`): pass 1 τ̄; pass 2 m_t = 1{|τ_t| > λ|τ̄ − τ_t|} for
  each λ of a grid, packed 1 bit per parameter as it is computed.
* **EMR** (:func:`stream_emr`): pass 1 Σ τ_t (the ledger) together with the per-coordinate
  maxima of positive and of negative τ_t, which give τ_uni = ε ⊙ max_t |τ_t ⊙ 1{τ_t ε > 0}|
  once ε = sign(Σ τ_t) (zeros → −1) is known; pass 2 m_t = 1{τ_t ⊙ ε > 0} and the rescaler
  λ_t = Σ_l mean|τ_t,l| / Σ_l mean|m_t,l ⊙ τ_uni,l| over parameter tensors l (``rescaler=
  "per-tensor"``, as :func:`clamu_helpers.masks.emr`) or Σ|τ_t| / Σ|m_t ⊙ τ_uni| (``"global"``);
  float64 sums, chunk by chunk.

Masks and τ_uni equal the in-memory :mod:`clamu_helpers.masks` results bit for bit (with ε
from the exact τ̄); rescalers agree to float64 rounding (summation order differs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from .progress import tqdm

from .errors import ExactnessError, ShapeMismatchError
from .ledger import MergeLedger
from .masks import LAMBDA_GRID, EMRResult
from .params import ParamSpec
from .store import CHUNK, StoredVector, TaskVectorStore, open_all  # open_all re-exported


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
    ledgers side by side and combined here (:mod:`clamu_helpers.partial`): the same integers
    and digest as ``"serial"``, with one partial ledger per worker in memory.
    """
    _check_chunk(chunk)
    if backend != "serial":
        from .partial import merge_stored
        base = ledger if ledger is not None else MergeLedger(spec, **ledger_kw)
        kw = {"scale_bits": base.scale_bits, "max_tasks": base.max_tasks}
        part = merge_stored(store, list(keys), spec, chunk, backend=backend, workers=workers,
                            ray_address=ray_address, **kw)
        base.absorb(part.ledger)
        return base
    led = ledger if ledger is not None else MergeLedger(spec, **ledger_kw)
    for sv in _bar(open_all(store, keys, spec), "merge (streamed)", progress):
        led.add_stream(sv.task_id, lambda sv=sv: sv.chunks(chunk, verify=False), sha256=sv.sha256)
    return led


def _ledger_for(store, svs, spec, chunk, ledger, progress) -> MergeLedger:
    if ledger is None:
        led = MergeLedger(spec)
        for sv in _bar(svs, "pass 1: τ̄", progress):
            led.add_stream(sv.task_id, lambda sv=sv: sv.chunks(chunk, verify=False), sha256=sv.sha256)
        return led
    want = {sv.task_id: sv.sha256 for sv in svs}
    if ledger.hashes != want:
        raise ExactnessError("the given ledger does not hold exactly these stored task vectors "
                             f"({len(ledger)} merged vs {len(want)} stored, or hashes differ)")
    return ledger


def _chunks_at(sv: StoredVector, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    off = 0
    for c in sv.chunks(chunk, verify=True):
        yield off, c
        off += c.numel()


def _pack_into(out: np.ndarray, off: int, bits: torch.Tensor) -> None:
    packed = np.packbits(bits.numpy(), bitorder="little")
    out[off // 8: off // 8 + packed.size] = packed


@dataclass
class TallStream:
    """TALL masks from the store: ``masks[λ][task_id]`` is a packed mask (or its store key
    when saved), over τ̄ of ``ledger``."""

    ledger: MergeLedger
    masks: dict[float, dict[str, torch.Tensor | str]] = field(default_factory=dict)


def stream_tall_masks(store: TaskVectorStore, keys: Sequence[str], spec: ParamSpec,
                      lambdas: float | Sequence[float] = LAMBDA_GRID, ledger: MergeLedger | None = None,
                      chunk: int = CHUNK, save: bool = False, progress: bool = False) -> TallStream:
    """m_t = 1{|τ_t| > λ|τ̄ − τ_t|} for every stored τ_t and every λ, in two streamed passes.

    τ̄ is the ledger's float32 ``tau_bar()`` (pass 1 builds it unless ``ledger`` already holds
    exactly these tasks). ``save``: write each packed mask to the store (key from
    :meth:`TaskVectorStore.mask_key` of "tall", λ, the ledger digest and the task id) and
    return keys, keeping memory flat in T.
    """
    _check_chunk(chunk)
    lams = [float(lambdas)] if isinstance(lambdas, (int, float)) else [float(x) for x in lambdas]
    if not lams or any(not np.isfinite(x) or x < 0 for x in lams):
        raise ValueError(f"λ must be finite and ≥ 0, got {lambdas}")
    svs = open_all(store, keys, spec)
    led = _ledger_for(store, svs, spec, chunk, ledger, progress)
    d, digest = spec.numel, led.digest()
    lam_t = [torch.as_tensor(x, dtype=torch.float32, device="cpu") for x in lams]
    result = TallStream(led, {x: {} for x in lams})
    for sv in _bar(svs, "pass 2: TALL masks", progress):
        outs = [np.zeros((d + 7) // 8, dtype=np.uint8) for _ in lams]
        for off, c in _chunks_at(sv, chunk):
            ax = c.abs()
            diff = (led.tau_bar_slice(off, off + c.numel()) - c).abs()
            for out, lt in zip(outs, lam_t):
                _pack_into(out, off, ax > lt * diff)
        for lam, out in zip(lams, outs):
            packed = torch.from_numpy(out)
            if save:
                key = store.mask_key("tall", lam, digest, sv.task_id)
                store.put_mask(key, packed, d, sv.task_id, {"method": "tall", "lambda": lam, "ledger": digest})
                result.masks[lam][sv.task_id] = key
            else:
                result.masks[lam][sv.task_id] = packed
    return result


@dataclass
class EmrStream:
    """EMR-merging from the store: the exact ledger and the :class:`~clamu_helpers.masks.EMRResult`
    (ε, τ_uni, packed masks m_t and rescalers λ_t by task id)."""

    ledger: MergeLedger
    emr: EMRResult


def _segment_abs_sums(c: torch.Tensor, off: int, bounds: Sequence[int], acc: list[float]) -> None:
    """Add Σ|c| over each parameter tensor (bounds: their cumulative end offsets) to ``acc``,
    for a chunk ``c`` that starts at flat offset ``off``."""
    start, end, a = off, off + c.numel(), c.abs().to(torch.float64)
    lo = 0
    for i, hi in enumerate(bounds):
        if hi > start and lo < end:
            acc[i] += float(a[max(lo, start) - off:min(hi, end) - off].sum())
        lo = hi
        if lo >= end:
            break


def stream_emr(store: TaskVectorStore, keys: Sequence[str], spec: ParamSpec, chunk: int = CHUNK,
               progress: bool = False, rescaler: str = "per-tensor") -> EmrStream:
    """EMR-merging over stored τ_t in two streamed passes (see the module docstring)."""
    from .masks import RESCALERS
    _check_chunk(chunk)
    if rescaler not in RESCALERS:
        raise ValueError(f"rescaler must be one of {RESCALERS}, got {rescaler!r}")
    sizes = spec.sizes if rescaler == "per-tensor" else [spec.numel]
    bounds = np.cumsum(sizes).tolist()
    svs = open_all(store, keys, spec)
    if not svs:
        raise ValueError("EMR needs at least one task vector")
    d = spec.numel
    pos = torch.zeros(d, dtype=torch.float32, device="cpu")   # max_t max(τ_t, 0)
    neg = torch.zeros(d, dtype=torch.float32, device="cpu")   # max_t max(−τ_t, 0)
    led = MergeLedger(spec)

    def tapped(sv):
        def gen():
            off = 0
            for c in sv.chunks(chunk, verify=False):
                sl = slice(off, off + c.numel())
                torch.maximum(pos[sl], c, out=pos[sl])
                torch.maximum(neg[sl], c.neg(), out=neg[sl])
                yield c
                off += c.numel()
        return gen

    for sv in _bar(svs, "pass 1: Σ τ_t, maxima", progress):
        led.add_stream(sv.task_id, tapped(sv), sha256=sv.sha256)
    zero = torch.zeros((), dtype=torch.float32, device="cpu")
    eps = torch.empty(d, dtype=torch.float32, device="cpu")
    for off in range(0, d, chunk):
        eps[off:off + chunk] = torch.where(led.tau_bar_slice(off, min(off + chunk, d)) > 0, 1.0, -1.0)
    absmax = torch.where(eps > 0, pos, neg)
    absmax = torch.where(absmax == 0, zero, absmax)  # +0.0, never −0.0
    del pos, neg
    tau_uni = eps * absmax
    masks, rescalers = {}, {}
    for sv in _bar(svs, "pass 2: EMR masks", progress):
        out = np.zeros((d + 7) // 8, dtype=np.uint8)
        num, den = [0.0] * len(sizes), [0.0] * len(sizes)
        for off, c in _chunks_at(sv, chunk):
            sl = slice(off, off + c.numel())
            m = c * eps[sl] > 0
            _pack_into(out, off, m)
            _segment_abs_sums(c, off, bounds, num)
            _segment_abs_sums(torch.where(m, absmax[sl], zero), off, bounds, den)
        masks[sv.task_id] = torch.from_numpy(out)
        n = sum(v / k for v, k in zip(num, sizes))
        dd = sum(v / k for v, k in zip(den, sizes))
        rescalers[sv.task_id] = n / dd if dd > 0 else 0.0
    if tau_uni.numel() != d:
        raise ShapeMismatchError("internal: τ_uni has the wrong length")
    return EmrStream(led, EMRResult(eps, tau_uni, masks, rescalers))
