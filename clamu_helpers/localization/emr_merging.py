"""EMR-merging (Huang et al. 2024), one implementation over chunks of the task vectors.

Given the elected sign ε = sign(Σ_t τ_t) (zeros → −1), one pass over the vectors, chunk by chunk,
computes each mask m_t = 1{τ_t ⊙ ε > 0} (packed as it goes), the unified vector's magnitudes
max_t |τ_t ⊙ m_t| and the numerators of the rescalers; the denominators then come from the packed
masks and τ_uni = ε ⊙ max_t |τ_t ⊙ m_t| alone. The rescaler is the original code's per parameter
tensor l (``rescaler="per-tensor"``): λ_t = Σ_l mean|τ_t,l| / Σ_l mean|m_t,l ⊙ τ_uni,l|, or
Σ|τ_t| / Σ|m_t ⊙ τ_uni| over all parameters (``"global"``); float64, λ_t = 0 for an empty mask.

:func:`emr_chunks` is that pass. :func:`emr` runs it on vectors in memory (each vector one chunk),
:func:`clamu_helpers.scaleout.streaming.stream_emr` on vectors read from the store chunk by chunk: masks and
τ_uni are the same bits either way; rescalers agree to float64 rounding (per-segment sums are
split where chunks split them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..core.errors import NonFiniteError, ShapeMismatchError
from .masks import _flat, _same_length, masked_weights
from ..core.packing import pack_into, unpack
from ..runtime.timing import MASKS, timed_function

#: how EMR's rescalers λ_t are computed (see the module docstring)
RESCALERS = ("per-tensor", "global")

#: (key, [(flat offset, chunk), ...]) for each vector: what :func:`emr_chunks` passes over
Chunked = Iterable[tuple[Hashable, Iterable[tuple[int, torch.Tensor]]]]
VectorSource = Mapping[Hashable, torch.Tensor] | Callable[[], Iterable[tuple[Hashable, torch.Tensor]]]


def emr_elect(total: torch.Tensor) -> torch.Tensor:
    """ε = sign(Σ_t τ_t) with zeros → −1 (float32 ±1)."""
    _flat(total, "Σ τ_t")
    one = torch.ones((), dtype=torch.float32, device=total.device)
    return torch.where(total > 0, one, -one)


@dataclass
class EMRResult:
    """EMR-merging's served state: ε, τ_uni, packed masks m_t and rescalers λ_t (by key)."""

    epsilon: torch.Tensor
    tau_uni: torch.Tensor
    masks: dict = field(default_factory=dict)
    rescalers: dict = field(default_factory=dict)

    def mask(self, key: Hashable) -> torch.Tensor:
        return unpack(self.masks[key], self.tau_uni.numel())

    def weights(self, theta0: torch.Tensor, key: Hashable, rescale: bool = True) -> torch.Tensor:
        """M0 + λ_t m_t ⊙ τ_uni (λ_t = 1 when ``rescale`` is False)."""
        lam = self.rescalers[key] if rescale else 1.0
        return masked_weights(theta0, self.mask(key), self.tau_uni, lam)


def _segment_abs_sums(c: torch.Tensor, off: int, bounds: Sequence[int], acc: list[float]) -> None:
    """Add Σ|c| over each segment (``bounds``: their cumulative end offsets) to ``acc``, for a
    chunk ``c`` that starts at flat offset ``off`` (float64 sums)."""
    start, end, a = off, off + c.numel(), c.abs().to(torch.float64)
    lo = 0
    for i, hi in enumerate(bounds):
        if hi > start and lo < end:
            acc[i] += float(a[max(lo, start) - off:min(hi, end) - off].sum())
        lo = hi
        if lo >= end:
            break


def _abs_mean_sum(acc: list[float], sizes: Sequence[int]) -> float:
    """Σ_l (Σ|v_l|) / |l| over the non-empty segments l: Σ_l mean|v_l|."""
    return float(sum(a / k for a, k in zip(acc, sizes) if k))


def segment_sizes(d: int, segments: Sequence[int] | None, rescaler: str) -> list[int]:
    """The parameter segments the rescalers average over: ``segments`` (the parameter tensors'
    sizes) for ``"per-tensor"``, one segment of d for ``"global"`` or when ``segments`` is None."""
    if rescaler not in RESCALERS:
        raise ValueError(f"rescaler must be one of {RESCALERS}, got {rescaler!r}")
    sizes = [d] if rescaler == "global" or segments is None else [int(k) for k in segments]
    if sum(sizes) != d:
        raise ShapeMismatchError(f"segments sum to {sum(sizes)}, the vectors have {d} parameters")
    return sizes


def emr_pass(vectors: Chunked, eps: torch.Tensor, sizes: Sequence[int]) -> tuple[dict, torch.Tensor, dict]:
    """The pass over the vectors: (packed masks m_t, max_t |τ_t ⊙ m_t|, rescaler numerators
    Σ_l mean|τ_t,l|) for ε. Vectors can be split among workers: masks and numerators are per
    vector, and the maxima of several passes combine exactly (``torch.maximum``)."""
    d = eps.numel()
    bounds = np.cumsum(sizes).tolist()
    zero = torch.zeros((), dtype=torch.float32, device=eps.device)
    absmax = torch.zeros(d, dtype=torch.float32, device=eps.device)
    masks, num = {}, {}
    for key, chunks in vectors:
        if key in masks:
            raise ValueError(f"key {key!r} appears twice")
        out, acc, seen = np.zeros((d + 7) // 8, dtype=np.uint8), [0.0] * len(sizes), 0
        for off, c in chunks:
            if off != seen or off % 8:
                raise ValueError(f"chunks of τ_{key} must be consecutive and start at multiples of 8 (got {off})")
            if not bool(torch.isfinite(c).all()):
                raise NonFiniteError(f"τ_{key} has NaN/inf entries")
            sl = slice(off, off + c.numel())
            pos = c * eps[sl] > 0
            pack_into(out, off, pos)
            torch.maximum(absmax[sl], torch.where(pos, c.abs(), zero), out=absmax[sl])
            _segment_abs_sums(c, off, bounds, acc)
            seen = off + c.numel()
        if seen != d:
            raise ShapeMismatchError(f"τ_{key} has {seen} parameters, ε has {d}")
        masks[key], num[key] = torch.from_numpy(out), _abs_mean_sum(acc, sizes)
    return masks, absmax, num


def emr_finish(eps: torch.Tensor, masks: dict, absmax: torch.Tensor, num: dict, sizes: Sequence[int]) -> EMRResult:
    """τ_uni = ε ⊙ max_t |τ_t ⊙ m_t| and the rescalers, from the pass's results alone (no vector
    is read again): λ_t = num_t / Σ_l mean|m_t,l ⊙ τ_uni,l|, 0 for an empty mask."""
    if not masks:
        raise ValueError("EMR needs at least one task vector")
    d, bounds = eps.numel(), np.cumsum(sizes).tolist()
    zero = torch.zeros((), dtype=torch.float32, device=eps.device)
    rescalers = {}
    for key, packed in masks.items():
        acc = [0.0] * len(sizes)
        _segment_abs_sums(torch.where(unpack(packed, d).to(eps.device), absmax, zero), 0, bounds, acc)
        den = _abs_mean_sum(acc, sizes)
        rescalers[key] = num[key] / den if den > 0 else 0.0
    return EMRResult(eps, eps * absmax, masks, rescalers)


def emr_chunks(vectors: Callable[[], Chunked], eps: torch.Tensor, segments: Sequence[int] | None = None,
               rescaler: str = "per-tensor") -> EMRResult:
    """EMR-merging in one pass over ``vectors()`` (see the module docstring) for the elected ε:
    :func:`emr_pass` then :func:`emr_finish`.

    ``segments``: the parameter tensors' sizes in flat order (None: one segment of d). Chunks
    must start at multiples of 8 (masks are packed 8 bits per byte) and cover each vector in
    order. Memory: τ_uni and ε (d each), plus one packed mask (d/8 bytes) per vector.
    """
    _flat(eps, "ε")
    sizes = segment_sizes(eps.numel(), segments, rescaler)
    return emr_finish(eps, *emr_pass(vectors(), eps, sizes), sizes)


def _items(vectors: VectorSource) -> Iterable[tuple[Hashable, torch.Tensor]]:
    if isinstance(vectors, Mapping):
        return vectors.items()
    if callable(vectors):
        return vectors()
    raise TypeError("vectors must be a mapping key → τ_t or a zero-argument callable yielding (key, τ_t) pairs")


@timed_function(MASKS)
def emr(vectors: VectorSource, elect: torch.Tensor | None = None, segments: Sequence[int] | None = None,
        rescaler: str = "per-tensor") -> EMRResult:
    """EMR-merging of vectors in memory: :func:`emr_chunks` with each vector as one chunk.

    ``vectors``: a mapping key → τ_t, or a zero-argument callable yielding (key, τ_t) pairs (read
    twice when ``elect`` is None). ``elect``: Σ_t τ_t of exactly these vectors when the caller
    already has it (the system passes the exact ledger τ̄ for per-task EMR: one pass then);
    otherwise it is summed here in float64.
    """
    if rescaler not in RESCALERS:
        raise ValueError(f"rescaler must be one of {RESCALERS}, got {rescaler!r}")
    if elect is None:
        total = None
        for key, tau in _items(vectors):
            _flat(tau, f"τ_{key}")
            if total is not None:
                _same_length(tau, total, f"τ_{key} and the others")
            total = tau.to(torch.float64).clone() if total is None else total.add_(tau.to(torch.float64))
        if total is None:
            raise ValueError("EMR needs at least one task vector")
        elect = total
    eps = emr_elect(elect)

    def whole():
        for key, tau in _items(vectors):
            _flat(tau, f"τ_{key}")
            _same_length(tau, eps, f"τ_{key} and ε")
            yield key, [(0, tau)]

    return emr_chunks(whole, eps, segments, rescaler)


__all__ = ["EMRResult", "RESCALERS", "emr", "emr_chunks", "emr_elect", "emr_finish", "emr_pass", "segment_sizes"]
