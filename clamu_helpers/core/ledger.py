"""The exact merge τ̄ = Σ_t τ_t: an order-independent fixed-point accumulator.

Float addition is not associative, so (τ̄ + τ_u) − τ_u is not τ̄ in float32. The ledger
rounds each task vector once, deterministically, to integer multiples of 2^-``scale_bits``
and sums those integers in int64. Adding and removing in any order then yields exactly the
integers of a from-scratch merge of the tasks that remain, and τ̄ (and everything served
from it) is a pure function of that set. The ledger also records a digest of every merged
τ_t (in its ``digest`` format, BLAKE3 by default, :mod:`clamu_helpers.core.digests`) and refuses
to subtract a vector whose bits differ (:class:`ExactnessError`).

(Over 300 lines on purpose: the exact add has three paths, the fused kernel of
:mod:`clamu_helpers.core.ledger_kernel`, chunked torch and batched float64, and each one's
all-or-nothing rollback has to live beside the integer sum it protects.)
"""
from __future__ import annotations

import functools
import itertools
import json
import uuid
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from .errors import (DuplicateTaskError, ExactnessError, NonFiniteError, ShapeMismatchError,
                     StateError, UnknownTaskError)
from . import digests, ledger_kernel
from .params import ParamSpec
from .taskvector import TaskVector

_PROCESS = uuid.uuid4().hex[:12]   # stamps made in different processes never collide
_COUNTER = itertools.count()


def _new_stamp() -> str:
    return f"{_PROCESS}:{next(_COUNTER)}"


def _changes_state(method):
    """Give the ledger a new :attr:`~MergeLedger.stamp` after ``method`` ran, whether it
    succeeded or failed (a failure rolls back, so the new stamp only costs a cache miss)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.stamp = _new_stamp()
    return wrapper


class MergeLedger:
    """Exact τ̄ over a parameter spec, with a per-task hash record.

    ``scale_bits`` sets the grid (2^-40 ≈ 9e-13 by default, far below float32 resolution
    of typical weights). ``max_tasks`` bounds the number of merged tasks so that the int64
    sum cannot overflow: entries of τ_t must satisfy |τ| < 2^(62 − scale_bits − log2 max_tasks).
    ``digest`` is the format the per-task digests and :meth:`digest` are written in
    (:data:`clamu_helpers.core.digests.DEFAULT`; ``"legacy"`` for a ledger saved before digests
    named their algorithm, which keeps its old digests).
    """

    def __init__(self, spec: ParamSpec, scale_bits: int = 40, max_tasks: int = 4096, digest: str | None = None):
        self.spec = spec
        self.digest_format = digests.check_algorithm(digests.DEFAULT if digest is None else digest)
        self.scale_bits = int(scale_bits)
        self.max_tasks = int(max_tasks)
        headroom = 62 - self.scale_bits - max(1, (self.max_tasks - 1).bit_length())
        if headroom < 0:
            raise ValueError("scale_bits and max_tasks leave no int64 headroom")
        self.max_abs = float(2 ** headroom)
        self._bound = self.max_abs * 2.0 ** self.scale_bits  # |τ·2^s| must stay below this
        self._sum = torch.zeros(spec.numel, dtype=torch.int64, device="cpu")
        self._hashes: dict[str, str] = {}
        self.stamp = _new_stamp()
        """Names this ledger's contents (τ̄ and the merged set): a new value after every change,
        copied with the ledger, never reused, so a cache of τ̄ keyed on it is never stale."""

    # -- the two operations ------------------------------------------------------------
    def quantize(self, tv: TaskVector) -> torch.Tensor:
        """τ_t on the fixed-point grid, as int64 (after every validity check)."""
        self._check_spec(tv)
        out = torch.empty(self.spec.numel, dtype=torch.int64, device="cpu")
        for start, stop in self._chunks():
            out[start:stop] = self._quantize_chunk(tv.values[start:stop], tv.task_id)
        return out

    # Chunked exact quantization. Each chunk is scaled in float32, rounded and converted to
    # int64 while it sits in cache. This equals the original float64 formula
    # ``round(float64(x) * 2^s)`` bit for bit: scaling a float32 by a power of two is exact
    # (no overflow, since |x| < max_abs keeps |x·2^s| < 2^62; an underflowing product has
    # magnitude < 2^-126 and rounds to 0 either way); round-half-even of a float32 y is
    # representable in float32 (|y| ≥ 2^23 is already an integer, smaller ones round to an
    # integer ≤ 2^23), so float32 and float64 rounding agree; the integer converts exactly.
    # ``tests/test_streaming.py`` checks this against the float64 formula on edge cases.
    CHUNK = 1 << 18  # 256K values: amortises per-op dispatch; fastest in benchmarks/bench_ledger.py

    def _chunks(self, numel: int | None = None):
        d = self.spec.numel if numel is None else numel
        return ((i, min(i + self.CHUNK, d)) for i in range(0, d, self.CHUNK))

    def _check_spec(self, tv: TaskVector) -> None:
        if tv.spec.digest() != self.spec.digest():
            raise ShapeMismatchError(
                f"task vector {tv.task_id!r} has a different parameter spec (d={tv.spec.numel}) "
                f"than the ledger (d={self.spec.numel})")

    def _quantize_chunk(self, values: torch.Tensor, task_id: str) -> torch.Tensor:
        """One chunk of τ_t as int64 grid points; raises NonFiniteError on NaN/inf or range.
        The result lives in a scratch buffer reused by the next call (use it at once)."""
        n = values.numel()
        buf = self.__dict__.get("_scratch")
        if buf is None or buf[0].numel() < n:
            buf = (torch.empty(max(n, self.CHUNK), device="cpu"),
                   torch.empty(max(n, self.CHUNK), dtype=torch.int64, device="cpu"))
            self.__dict__["_scratch"] = buf
        y, q = buf[0][:n], buf[1][:n]
        torch.mul(values, 2.0 ** self.scale_bits, out=y)
        if n:
            lo, hi = torch.aminmax(y)
            lo, hi = float(lo), float(hi)
            if not (-self._bound < lo and hi < self._bound):  # also catches NaN (comparisons are False)
                if not bool(torch.isfinite(values).all()):
                    bad = int((~torch.isfinite(values)).sum())
                    raise NonFiniteError(f"task vector {task_id!r} has {bad} NaN/inf entries; refusing to merge it")
                big = float(values.abs().max())
                raise NonFiniteError(
                    f"task vector {task_id!r} has an entry of magnitude {big:.3g} ≥ {self.max_abs:g}, "
                    f"outside the ledger's exact range (lower scale_bits or max_tasks)")
        torch.round(y, out=y)
        return q.copy_(y)

    def _fused(self, tvs: list[TaskVector], sign: int) -> None:
        """τ̄ ← τ̄ ± Σ quantize(τ_t) with the fused kernel (:mod:`clamu_helpers.core.ledger_kernel`):
        chunk by chunk, every task inside a chunk while its int64 slice sits in cache. On an
        invalid vector everything applied is subtracted again (exact), then the error raised."""
        total = self._sum.numpy()
        arrays = [tv.values.detach().cpu().contiguous().numpy() for tv in tvs]
        applied: list[tuple[int, int, int]] = []   # (start, stop, tasks applied to that chunk)
        for start, stop in self._chunks():
            for i, a in enumerate(arrays):
                if ledger_kernel.quant_add(total[start:stop], a[start:stop], self.scale_bits, self._bound, sign) >= 0:
                    applied.append((start, stop, i))
                    for b, e, k in applied:
                        for done in arrays[:k]:
                            ledger_kernel.quant_add(total[b:e], done[b:e], self.scale_bits, self._bound, -sign)
                    self._quantize_chunk(tvs[i].values, tvs[i].task_id)   # raises the specific error
                    raise NonFiniteError(f"task vector {tvs[i].task_id!r} is outside the ledger's range")
            applied.append((start, stop, len(arrays)))

    def _accumulate(self, tv: TaskVector, sign: int) -> None:
        """τ̄ ← τ̄ ± quantize(τ_t), chunk by chunk; on an invalid chunk the chunks already
        applied are undone exactly (integers), so the ledger is unchanged by a failure."""
        self._check_spec(tv)
        if ledger_kernel.available():
            return self._fused([tv], sign)
        done = 0
        try:
            for start, stop in self._chunks():
                q = self._quantize_chunk(tv.values[start:stop], tv.task_id)
                self._sum[start:stop].add_(q, alpha=sign)
                done = stop
        except Exception:
            for start, stop in self._chunks(done):
                self._sum[start:stop].sub_(self._quantize_chunk(tv.values[start:stop], tv.task_id), alpha=sign)
            raise

    # Batched accumulation. For several task vectors at once, each chunk of every τ_t is put
    # on the grid (float32 scale and round, as above) and summed into a float64 scratch
    # buffer; the buffer goes into the int64 sum once per batch instead of once per task.
    # Integer-valued float64 sums are exact while every partial sum stays below 2^53 in
    # magnitude, and a partial sum is bounded by the sum of the chunks' max |y|, which is
    # tracked: the buffer is flushed into the int64 sum before that bound could reach 2^53.
    # The result is therefore the same integers as adding the tasks one by one.
    _EXACT_F64 = float(2 ** 53)

    def _accumulate_many(self, tvs: list[TaskVector], sign: int) -> None:
        for tv in tvs:
            self._check_spec(tv)
        if len(tvs) == 1:
            return self._accumulate(tvs[0], sign)
        if ledger_kernel.available():
            return self._fused(tvs, sign)
        bufs = self.__dict__.get("_acc64")
        if bufs is None or bufs[0].size < self.CHUNK:
            bufs = self.__dict__["_acc64"] = (np.empty(self.CHUNK, dtype=np.float64),
                                              np.empty(self.CHUNK, dtype=np.int64))
        total = self._sum.numpy()
        done, start, flushed = 0, 0, 0  # chunks [0, done) hold all tasks; chunk at start the first `flushed`
        try:
            for start, stop in self._chunks():
                a, q = bufs[0][: stop - start], bufs[1][: stop - start]
                bound, flushed = None, 0
                for i, tv in enumerate(tvs):
                    y = self._quantize_chunk_np(tv.values[start:stop], tv.task_id)
                    m = self._last_max
                    if bound is not None and bound + m >= self._EXACT_F64:  # a partial sum could be inexact
                        self._flush(total[start:stop], a, q, sign)
                        bound, flushed = None, i
                    if bound is None:
                        np.copyto(a, y)
                        bound = m
                    else:
                        np.add(a, y, out=a)
                        bound += m
                self._flush(total[start:stop], a, q, sign)
                done, flushed = stop, 0
        except Exception:  # undo exactly what was applied, so a failure changes nothing
            undo = [(b, e, tvs) for b, e in self._chunks(done)]
            if flushed:
                undo.append((start, min(start + self.CHUNK, self.spec.numel), tvs[:flushed]))
            for b, e, part in undo:
                for tv in part:
                    self._sum[b:e].sub_(self._quantize_chunk(tv.values[b:e], tv.task_id), alpha=sign)
            raise

    @staticmethod
    def _flush(total: np.ndarray, a: np.ndarray, q: np.ndarray, sign: int) -> None:
        np.copyto(q, a, casting="unsafe")  # exact: a holds integers below 2^53
        (np.add if sign > 0 else np.subtract)(total, q, out=total)

    def _quantize_chunk_np(self, values: torch.Tensor, task_id: str) -> np.ndarray:
        """One chunk of τ_t on the grid as integer-valued float32 (numpy, scratch buffer);
        sets ``_last_max`` to its largest magnitude. Same checks as :meth:`_quantize_chunk`."""
        n = values.numel()
        buf = self.__dict__.get("_scratch32")
        if buf is None or buf.size < n:
            buf = self.__dict__["_scratch32"] = np.empty(max(n, self.CHUNK), dtype=np.float32)
        y = buf[:n]
        np.multiply(values.numpy(), np.float32(2.0 ** self.scale_bits), out=y)
        self._last_max = 0.0
        if n:
            lo, hi = torch.aminmax(torch.from_numpy(y))
            lo, hi = float(lo), float(hi)
            if not (-self._bound < lo and hi < self._bound):
                self._quantize_chunk(values, task_id)  # raises the specific error
            self._last_max = max(-lo, hi) + 1.0  # rounding moves |y| by at most 1/2
        np.rint(y, out=y)
        return y

    @_changes_state
    def add_many(self, items: Mapping[str, TaskVector] | Iterable[tuple[str, TaskVector]]) -> None:
        """τ̄ ← τ̄ + Σ_t τ_t for several tasks in one pass over τ̄ (the same integers as
        :meth:`add` one by one, faster). All ids and specs are checked first; on a bad vector
        nothing is added."""
        pairs = [(str(t), tv) for t, tv in (items.items() if isinstance(items, Mapping) else items)]
        ids = [t for t, _ in pairs]
        if len(set(ids)) != len(ids):
            dup = sorted({t for t in ids if ids.count(t) > 1})
            raise DuplicateTaskError(f"tasks {dup} appear more than once in this batch")
        merged = [t for t in ids if t in self._hashes]
        if merged:
            raise DuplicateTaskError(f"tasks {merged[:5]} are already merged")
        if len(self._hashes) + len(ids) > self.max_tasks:
            raise ValueError(f"ledger would hold {len(self._hashes) + len(ids)} tasks, more than "
                             f"max_tasks={self.max_tasks}; create it with a larger max_tasks")
        if pairs:
            self._accumulate_many([tv for _, tv in pairs], +1)
        for t, tv in pairs:
            self._hashes[t] = tv.digest_in(self.digest_format)

    @_changes_state
    def remove_many(self, items: Mapping[str, TaskVector] | Iterable[tuple[str, TaskVector]]) -> None:
        """τ̄ ← τ̄ − Σ_u τ_u for several forgotten tasks at once, after checking every hash
        (as :meth:`remove`); on any error nothing is subtracted."""
        pairs = [(str(t), tv) for t, tv in (items.items() if isinstance(items, Mapping) else items)]
        ids = [t for t, _ in pairs]
        if len(set(ids)) != len(ids):
            raise DuplicateTaskError(f"tasks {sorted({t for t in ids if ids.count(t) > 1})} appear more than once")
        for t, tv in pairs:
            self._check_removable(t, tv)
        if pairs:
            self._accumulate_many([tv for _, tv in pairs], -1)
        for t in ids:
            del self._hashes[t]

    @_changes_state
    def add(self, task_id: str, tv: TaskVector) -> None:
        """τ̄ ← τ̄ + τ_t, recording the digest of τ_t. Raises on a repeated id or a bad vector."""
        task_id = str(task_id)
        if task_id in self._hashes:
            raise DuplicateTaskError(f"task {task_id!r} is already merged")
        if len(self._hashes) >= self.max_tasks:
            raise ValueError(f"ledger is full ({self.max_tasks} tasks); create it with a larger max_tasks")
        self._accumulate(tv, +1)
        self._hashes[task_id] = tv.digest_in(self.digest_format)

    @_changes_state
    def remove(self, task_id: str, tv: TaskVector) -> None:
        """τ̄ ← τ̄ − τ_u after checking that τ_u has exactly the bits recorded at merge time."""
        task_id = str(task_id)
        self._check_removable(task_id, tv)
        self._accumulate(tv, -1)
        del self._hashes[task_id]

    def _check_removable(self, task_id: str, tv: TaskVector) -> None:
        if task_id not in self._hashes:
            raise UnknownTaskError(f"task {task_id!r} is not merged (merged: {len(self._hashes)} tasks)")
        recorded = self._hashes[task_id]
        if not tv.matches(recorded):
            got = tv.digest_in(digests.format_of(recorded))
            raise ExactnessError(
                f"retrained task vector for {task_id!r} has digest {digests.short(got)}, but "
                f"{digests.short(recorded)} was merged: finetuning was not reproduced bit for "
                f"bit (changed thread count, library version, data or hyperparameters?). "
                f"Nothing was subtracted.")

    def check_hashes(self, vectors: Mapping[str, TaskVector], what: str = "task vectors") -> None:
        """Raise :class:`ExactnessError` unless every τ_t in ``vectors`` has exactly the digest
        recorded when it was merged (recomputed in the algorithm that digest names): the one
        check behind every retrain (system, methods)."""
        bad = sorted(t for t, tv in vectors.items() if str(t) not in self._hashes or not tv.matches(self._hashes[str(t)]))
        if bad:
            raise ExactnessError(
                f"{what} of {bad[:5]} differ from the ones merged (digest mismatch): finetuning was "
                f"not reproduced bit for bit (thread count, library versions, data or hyperparameters "
                f"changed?). Nothing was unlearned.")

    @_changes_state
    def add_stream(self, task_id: str, chunks: Callable[[], Iterable[torch.Tensor]],
                   expected: str | None = None) -> str:
        """τ̄ ← τ̄ + τ_t where τ_t arrives as consecutive float32 chunks (e.g. read from disk).

        ``chunks`` is a callable returning a fresh iterator over 1-D chunks that together are
        τ_t in order; the digest of τ_t is computed on the fly (the value
        ``TaskVector.digest_in(ledger.digest_format)`` gives), recorded and returned, and
        compared with ``expected`` if given (recomputed in the algorithm ``expected`` names when
        that differs from the ledger's, e.g. a vector stored before digests were named).
        Peak memory is one chunk. On any failure the chunks already added are re-read and
        subtracted exactly, so the ledger is left as it was. The result is bit-identical to
        :meth:`add` of the whole vector.
        """
        task_id = str(task_id)
        if task_id in self._hashes:
            raise DuplicateTaskError(f"task {task_id!r} is already merged")
        if len(self._hashes) >= self.max_tasks:
            raise ValueError(f"ledger is full ({self.max_tasks} tasks); create it with a larger max_tasks")
        d = self.spec.numel
        fmt = self.digest_format
        h = digests.hasher(fmt, torch.float32, (d,))
        fmt_x = None if expected is None else digests.format_of(expected)
        # a second hash only when ``expected`` was made by another algorithm (e.g. a legacy SHA-256 file)
        hx = (digests.hasher(fmt_x, torch.float32, (d,))
              if fmt_x is not None and digests.algorithm(fmt_x) != digests.algorithm(fmt) else None)
        done = 0
        try:
            for chunk in chunks():
                if chunk.dtype != torch.float32 or chunk.dim() != 1 or done + chunk.numel() > d:
                    raise ShapeMismatchError(
                        f"chunk of task {task_id!r} at offset {done} has shape {tuple(chunk.shape)} "
                        f"and dtype {chunk.dtype}; expected float32 pieces of a vector of {d}")
                chunk = chunk.contiguous()
                if ledger_kernel.available():
                    total = self._sum.numpy()[done:done + chunk.numel()]
                    if ledger_kernel.quant_add(total, chunk.numpy(), self.scale_bits, self._bound, 1) >= 0:
                        self._quantize_chunk(chunk, task_id)   # the kernel undid this chunk; raises the error
                        raise NonFiniteError(f"task vector {task_id!r} is outside the ledger's range")
                else:
                    for start, stop in self._chunks(chunk.numel()):
                        self._sum[done + start:done + stop].add_(self._quantize_chunk(chunk[start:stop], task_id))
                h.update(chunk.numpy())   # the buffer itself, not a copy
                if hx is not None:
                    hx.update(chunk.numpy())
                done += chunk.numel()
            if done != d:
                raise ShapeMismatchError(f"task {task_id!r} streamed {done} values, expected {d}")
            digest = digests.name(fmt, h)
            check = digest if hx is None else digests.name(fmt_x, hx)
            if expected is not None and not digests.same(check, expected):
                raise ExactnessError(
                    f"streamed task vector {task_id!r} has digest {digests.short(check)}, expected "
                    f"{digests.short(expected)} (corrupt or foreign file?); nothing was added")
        except Exception:
            self._undo_stream(chunks, done, task_id)
            raise
        self._hashes[task_id] = digest
        return digest

    def _undo_stream(self, chunks, done: int, task_id: str) -> None:
        off = 0
        for chunk in chunks():
            if off >= done:
                break
            chunk = chunk[: done - off].contiguous()
            for start, stop in self._chunks(chunk.numel()):
                self._sum[off + start:off + stop].sub_(self._quantize_chunk(chunk[start:stop], task_id))
            off += chunk.numel()
        if off != done:
            raise StateError(f"could not re-read task {task_id!r} to undo a failed streamed add: "
                             f"the ledger is inconsistent, rebuild it")

    def tau_bar_slice(self, start: int, stop: int) -> torch.Tensor:
        """``tau_bar()[start:stop]`` without materialising all of τ̄ (same bits)."""
        return self._sum[start:stop].to(torch.float64).mul_(2.0 ** -self.scale_bits).to(torch.float32)

    # -- what is served ------------------------------------------------------------------
    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._hashes))

    @property
    def hashes(self) -> dict[str, str]:
        return dict(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, task_id) -> bool:
        return str(task_id) in self._hashes

    def tau_bar(self) -> torch.Tensor:
        """τ̄ = Σ_t τ_t as float32 (a pure function of the merged set)."""
        return self._sum.to(torch.float64).mul_(2.0 ** -self.scale_bits).to(torch.float32)

    def digest(self) -> str:
        """Digest (in :attr:`digest_format`) of the served state: spec, grid, merged ids with
        their digests, and the sum."""
        h = digests.hasher(self.digest_format)
        h.update(json.dumps({"spec": self.spec.digest(), "scale_bits": self.scale_bits,
                             "tasks": sorted(self._hashes.items())}).encode())
        h.update(self._sum.numpy())
        return digests.name(self.digest_format, h)

    @_changes_state
    def absorb(self, other: "MergeLedger") -> None:
        """τ̄ ← τ̄ + τ̄_other for a ledger over other tasks (a partial merge computed elsewhere):
        integer addition, so any partition of the tasks absorbed in any grouping and order gives
        the integers of the one-ledger merge. Refuses (nothing changed) another spec or grid, a
        task merged in both, or more tasks in all than ``max_tasks`` (the overflow bound)."""
        if other.spec.digest() != self.spec.digest():
            raise ShapeMismatchError(f"cannot combine ledgers over different parameter specs "
                                     f"(d={other.spec.numel} vs d={self.spec.numel})")
        if (other.scale_bits, other.max_tasks) != (self.scale_bits, self.max_tasks):
            raise ExactnessError(f"cannot combine ledgers on different grids: scale_bits/max_tasks "
                                 f"{other.scale_bits}/{other.max_tasks} vs {self.scale_bits}/{self.max_tasks}")
        if other.digest_format != self.digest_format:
            raise ExactnessError(f"cannot combine ledgers that record digests in different formats "
                                 f"({other.digest_format!r} vs {self.digest_format!r})")
        both = sorted(set(other._hashes) & set(self._hashes))
        if both:
            raise DuplicateTaskError(f"tasks {both[:5]} are merged in both ledgers (a task may be merged once)")
        if len(self._hashes) + len(other._hashes) > self.max_tasks:
            raise ValueError(f"combined ledger would hold {len(self._hashes) + len(other._hashes)} tasks, "
                             f"more than max_tasks={self.max_tasks} (the int64 overflow bound)")
        self._sum.add_(other._sum)
        self._hashes.update(other._hashes)

    # -- construction and persistence -----------------------------------------------------
    @classmethod
    def from_vectors(cls, tvs: Iterable[TaskVector], spec: ParamSpec | None = None, **kw) -> "MergeLedger":
        tvs = list(tvs)
        if spec is None:
            if not tvs:
                raise ValueError("need a spec or at least one task vector")
            spec = tvs[0].spec
        led = cls(spec, **kw)
        led.add_many((tv.task_id, tv) for tv in tvs)
        return led

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) for saving with safetensors + JSON."""
        meta = {"scale_bits": self.scale_bits, "max_tasks": self.max_tasks, "digest": self.digest_format,
                "hashes": dict(sorted(self._hashes.items())), "spec": self.spec.to_json()}
        return {"ledger_sum": self._sum.clone()}, meta

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> "MergeLedger":
        # a ledger saved before digests named their algorithm has no "digest" field: it keeps
        # recording bare SHA-256 hex, so its digest (and every receipt over it) stays the same
        led = cls(ParamSpec.from_json(meta["spec"]), meta["scale_bits"], meta["max_tasks"],
                  digest=meta.get("digest", digests.LEGACY))
        s = tensors["ledger_sum"]
        if s.dtype != torch.int64 or s.shape != led._sum.shape:
            raise ShapeMismatchError("saved ledger sum does not match its spec")
        led._sum = s.clone()
        led._hashes = dict(meta["hashes"])
        led.stamp = _new_stamp()
        return led
