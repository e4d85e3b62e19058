"""Content digests of tensors that name their algorithm: ``"blake3:<hex>"``.

Every τ_t is hashed when it is merged and again when it is retrained for unlearning (the hash
is what refuses a retrain that is not bit-identical), and the served digest hashes the ledger's
int64 sum: on a large model these hashes cost about as much as the exact add itself. So the kit
takes the fastest cryptographic hash it measured (``benchmarks/bench_ledger.py``; results in
``benchmarks/RESULTS.md``): BLAKE3 from the ``blake3`` package, 2.3× faster than hashlib's
SHA-256 on one core of this machine kind and 4× on two; BLAKE2b was slower than SHA-256.

A digest is ``"<algorithm>:<hex>"``. A bare 64-hex-digit string is a SHA-256 digest recorded
before digests named their algorithm (stores, states and receipts written before this module),
so every digest ever stored stays verifiable: :func:`matches` recomputes a tensor's digest
with the algorithm the *recorded* digest names. The preimage is the same for every
algorithm: ``f"{dtype}|{shape}|"`` then the raw bytes.

A *format* is what a ledger records new digests in: an algorithm of :data:`ALGORITHMS`, or
:data:`LEGACY` (bare SHA-256 hex, exactly as before), which a system loaded from an old state
keeps, so that its served digest and receipts stay what they were.

Small JSON hashes (cache keys, manifests, receipts' own hashes, seeds) stay SHA-256 and say so
in their field names; only tensor contents, the hot path, go through this module.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Callable

import torch

_HEX = re.compile(r"[0-9a-f]+")


#: threads BLAKE3 may use on a large buffer: ``$CLAMU_DIGEST_THREADS`` ("auto", the default:
#: every core; or a number). A tree hash: the digest is the same whatever the count (asserted in
#: tests/test_digests.py); on 2 idle cores "auto" is ≈ 1.8× faster than 1.
THREADS = os.environ.get("CLAMU_DIGEST_THREADS", "auto")


def _blake3():
    try:
        import blake3
    except ImportError:  # pragma: no cover - blake3 is in requirements.txt
        return None
    if THREADS != "auto" and not (THREADS.isdigit() and int(THREADS) >= 1):
        raise ValueError(f"CLAMU_DIGEST_THREADS must be 'auto' or a positive integer, got {THREADS!r}")
    threads = blake3.blake3.AUTO if THREADS == "auto" else int(THREADS)
    return lambda: blake3.blake3(max_threads=1 if _FORKED[0] else threads)


#: set in a child made by ``os.fork()``: BLAKE3's threads come from a Rayon pool that a forked
#: child inherits without its threads, so hashing there with several threads would wait forever
#: for workers that do not exist (a hang seen once in the SIGKILL crash tests, whose zygote forks
#: after hashing). The child hashes on one thread: the same digest (a tree hash), never a hang.
_FORKED = [False]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _FORKED.__setitem__(0, True))


#: algorithm name → constructor of a hashlib-style object (``update``, ``hexdigest``)
ALGORITHMS: dict[str, Callable] = {"sha256": hashlib.sha256,
                                   "blake2b": lambda: hashlib.blake2b(digest_size=32)}
_BLAKE3 = _blake3()
if _BLAKE3 is not None:
    ALGORITHMS["blake3"] = _BLAKE3

#: hex digits of each algorithm's digest (all 256-bit)
HEX_LENGTH = 64

#: the algorithm new digests use: ``$CLAMU_DIGEST`` if set, else BLAKE3 (SHA-256 where the
#: ``blake3`` package is missing). Which one a ledger uses is recorded with it.
DEFAULT = os.environ.get("CLAMU_DIGEST", "blake3" if "blake3" in ALGORITHMS else "sha256")


#: the format of digests recorded before they named their algorithm: bare SHA-256 hex
LEGACY = "legacy"


def check_algorithm(fmt: str) -> str:
    """``fmt`` if it is a known format (an algorithm, or :data:`LEGACY`), else a ValueError."""
    if fmt != LEGACY and fmt not in ALGORITHMS:
        hint = " (pip install blake3)" if fmt == "blake3" else ""
        raise ValueError(f"unknown or unavailable digest algorithm {fmt!r}{hint}; "
                         f"available: {sorted(ALGORITHMS)} (or {LEGACY!r}: bare SHA-256 hex)")
    return fmt


check_algorithm(DEFAULT)


def algorithm(fmt: str) -> str:
    """The hash algorithm of format ``fmt`` (:data:`LEGACY` is SHA-256)."""
    return "sha256" if fmt == LEGACY else fmt


def parse(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a recorded digest; a bare 64-hex string is a legacy SHA-256 digest."""
    if not isinstance(digest, str):
        raise ValueError(f"a digest is a string, got {type(digest).__name__}")
    algorithm, sep, hexpart = digest.partition(":")
    if not sep:
        algorithm, hexpart = "sha256", digest
    if len(hexpart) != HEX_LENGTH or not _HEX.fullmatch(hexpart):
        raise ValueError(f"not a digest: {digest[:80]!r} (expected '<algorithm>:<64 hex digits>')")
    return algorithm, hexpart


class _Bytes:
    """A hash object whose ``update`` takes any C-contiguous buffer (a numpy array of any dtype)
    as its raw bytes, without a copy (BLAKE3 accepts only byte buffers)."""

    __slots__ = ("_h",)

    def __init__(self, h):
        self._h = h

    def update(self, data) -> None:
        self._h.update(data if isinstance(data, bytes) else memoryview(data).cast("B"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def hasher(fmt: str = DEFAULT, dtype: torch.dtype | None = None, shape: tuple | None = None) -> _Bytes:
    """A fresh hash object for format ``fmt``, fed the preimage header of a tensor of ``dtype``
    and ``shape`` when given (then feed it the raw bytes, in order, and call :func:`name`)."""
    h = _Bytes(ALGORITHMS[algorithm(check_algorithm(fmt))]())
    if dtype is not None:
        h.update(f"{dtype}|{tuple(shape)}|".encode())
    return h


def name(fmt: str, h) -> str:
    """The digest string of a finished hash object in format ``fmt`` (bare hex for :data:`LEGACY`)."""
    return h.hexdigest() if fmt == LEGACY else f"{fmt}:{h.hexdigest()}"


def tensor(t: torch.Tensor, fmt: str = DEFAULT) -> str:
    """Digest of a tensor's dtype, shape and raw bytes (contiguous, CPU), e.g. ``"blake3:…"``."""
    t = t.detach().contiguous().cpu()
    h = hasher(fmt, t.dtype, t.shape)
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())   # the buffer itself: no copy of the bytes
    return name(fmt, h)


def same(a: str, b: str) -> bool:
    """Do two recorded digests name the same algorithm and value (legacy bare SHA-256 included)?"""
    return parse(a) == parse(b)


def format_of(digest: str) -> str:
    """The format ``digest`` is written in: its algorithm, or :data:`LEGACY` for bare hex."""
    return parse(digest)[0] if ":" in digest else LEGACY


def matches(t: torch.Tensor, recorded: str) -> bool:
    """Does tensor ``t`` hash to ``recorded``, computed with the algorithm ``recorded`` names?"""
    return same(tensor(t, format_of(recorded)), recorded)


def short(digest: str, n: int = 16) -> str:
    """``"blake3:1a2b…"``: the algorithm and the first ``n`` hex digits, for messages."""
    try:
        algorithm, hexpart = parse(digest)
    except ValueError:
        return repr(digest)[:n + 2]
    return f"{algorithm}:{hexpart[:n]}…"


__all__ = ["ALGORITHMS", "DEFAULT", "LEGACY", "algorithm", "check_algorithm", "format_of", "hasher", "matches",
           "name", "parse", "same", "short", "tensor"]
