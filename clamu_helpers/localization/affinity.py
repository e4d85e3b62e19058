"""The cosine affinity of task vectors, A_ij = cos(τ_i, τ_j), for clustering them (draft Algorithm 1).

The Gram matrix Σ_blocks B·Bᵀ is accumulated in float64 over blocks of columns B [T × c] of the
T task vectors, so no step holds the T whole vectors: in memory (:func:`cosine_affinity`) or read
from a store block by block (``StoredVectors.column_blocks``, :func:`affinity_from_blocks`). The
block width is a pure function of T (:func:`gram_chunk`), so both give the same bits, hence the
same clusters.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..core.errors import ShapeMismatchError
from ..runtime.determinism import deterministic

#: how a cosine maps to a non-negative affinity: "clip" → max(cos, 0); "shift" → (1 + cos)/2
NEGATIVE = ("clip", "shift")

#: columns per block of the Gram matrix Σ_blocks B·Bᵀ (float64), at most: the block boundaries fix
#: the bits of the affinity, so in-memory and store-streamed τ_t give the same clusters
GRAM_CHUNK = 1 << 16
#: values per block, at most (T rows × columns): the block's memory stays flat in T; up to
#: T = 256 tasks the block is GRAM_CHUNK columns wide, as before this bound existed (same bits)
GRAM_BLOCK_VALUES = 1 << 24


def gram_chunk(n_tasks: int) -> int:
    """Columns per Gram block for ``n_tasks`` vectors: :data:`GRAM_CHUNK`, narrowed so that a
    block holds at most :data:`GRAM_BLOCK_VALUES` values (a pure function of T: in-memory and
    streamed τ_t get the same blocks, hence the same bits)."""
    return max(1, min(GRAM_CHUNK, GRAM_BLOCK_VALUES // max(1, int(n_tasks))))


def _column_blocks(vectors: Sequence[torch.Tensor], chunk: int) -> Iterator[torch.Tensor]:
    vs = list(vectors)
    if not vs:
        raise ValueError("need at least one vector")
    d = vs[0].numel()
    for i, v in enumerate(vs):
        if v.dim() != 1 or v.numel() != d:
            raise ShapeMismatchError(f"vector {i} has shape {tuple(v.shape)}, expected ({d},)")
    for start in range(0, d, chunk):
        block = torch.empty(len(vs), min(chunk, d - start), dtype=torch.float64, device="cpu")
        for i, v in enumerate(vs):
            block[i] = v[start:start + chunk]     # float32 → float64 is exact
        yield block


def affinity_from_blocks(blocks: Iterable[torch.Tensor], negative: str = "clip") -> np.ndarray:
    """T×T affinity from cos(τ_i, τ_j), the Gram matrix accumulated in float64 over blocks of
    columns [T × c] (rows: the tasks, in order). Zero vectors get cosine 0 with every other
    vector; the diagonal is 1. ``negative``: "clip" → max(cos, 0); "shift" → (1 + cos)/2.
    Blocks may come as float32 or float64 (the same values: the conversion is exact)."""
    if negative not in NEGATIVE:
        raise ValueError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    gram = None
    with deterministic(1):
        for block in blocks:
            b = block.to(torch.float64)
            if gram is None:
                gram = torch.zeros(b.shape[0], b.shape[0], dtype=torch.float64, device="cpu")
            gram += b @ b.T
    if gram is None:
        raise ValueError("need at least one block of columns")
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gram / torch.where(denom > 0, denom, 1.0), 0.0).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    aff = cos.clamp_min(0.0) if negative == "clip" else (1.0 + cos) / 2.0
    return aff.numpy()


def cosine_affinity(vectors: Sequence[torch.Tensor], negative: str = "clip", chunk: int | None = None) -> np.ndarray:
    """:func:`affinity_from_blocks` of whole vectors, a block of ``chunk`` columns at a time
    (default :func:`gram_chunk` of T; never stacks all T full vectors)."""
    if negative not in NEGATIVE:
        raise ValueError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    vs = list(vectors)
    return affinity_from_blocks(_column_blocks(vs, gram_chunk(len(vs)) if chunk is None else chunk), negative)


__all__ = ["GRAM_BLOCK_VALUES", "GRAM_CHUNK", "NEGATIVE", "affinity_from_blocks", "cosine_affinity", "gram_chunk"]
