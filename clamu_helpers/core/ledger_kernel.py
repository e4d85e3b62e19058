"""The ledger's exact add as one fused pass: quantise τ_t and add it to the int64 sum.

The pure-torch path (:class:`~clamu_helpers.core.ledger.MergeLedger`) scales a chunk into a
float32 scratch buffer, checks its range, rounds it, converts it and adds it: several passes
over the chunk. This kernel (numba, compiled on first use and cached on disk) does it in one:
for each coordinate y = τ·2^s in float32 (exact: a power-of-two scale), a range check
(|y| < bound, which NaN and ±inf fail), y rounded half to even (``rint``), converted to int64
(exact below 2^62) and added to the sum. Bit for bit the integers of the torch path (asserted
in the tests), reading 4 bytes of τ_t and reading and writing 8 of the sum per parameter: the
memory-bandwidth floor of the exact add (20 bytes against a float32 add's 12).

All or nothing: a coordinate out of range makes the kernel subtract again what it added for
that call (exact integers) and report the failure; the caller raises the specific error.

Used when numba imports (``requirements.txt`` pins it); ``CLAMU_LEDGER_KERNEL=torch`` forces
the pure-torch path, which stays the fallback and the reference.
"""
from __future__ import annotations

import os

import numpy as np

try:
    import numba
except ImportError:   # pragma: no cover - numba is in requirements.txt; the torch path remains
    numba = None


def available() -> bool:
    """Whether the fused kernel is used (numba imports and ``CLAMU_LEDGER_KERNEL`` is not ``torch``)."""
    return numba is not None and os.environ.get("CLAMU_LEDGER_KERNEL", "numba") != "torch"


if numba is not None:
    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _quant_add(total, v, scale, bound, sign):   # pragma: no cover - compiled
        n = v.shape[0]
        for i in range(n):
            y = v[i] * scale
            if not (-bound < y < bound):
                for j in range(i):   # undo this call exactly, then report the first bad index
                    total[j] -= sign * np.int64(np.rint(v[j] * scale))
                return i
            total[i] += sign * np.int64(np.rint(y))
        return -1
else:   # pragma: no cover
    _quant_add = None


def quant_add(total: np.ndarray, values: np.ndarray, scale_bits: int, bound: float, sign: int) -> int:
    """total += sign · rint(values · 2^scale_bits) in one pass; returns -1, or the index of the
    first coordinate out of range (total unchanged then). ``total`` int64, ``values`` float32,
    both contiguous 1-D of one length."""
    return int(_quant_add(total, values, np.float32(2.0 ** scale_bits), np.float32(bound), np.int64(sign)))


__all__ = ["available", "quant_add"]
