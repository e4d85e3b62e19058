"""TIES-merging's formula (Yadav et al. 2023) on any task vectors: trim, elect, disjoint mean.

The merging *methods* are :mod:`clamu_helpers.methods` (``merge``, ``ties``, ``tall``, ``emr``,
``clamu``, ``sift``, …: what an :class:`~clamu_helpers.unlearning.system.UnlearningSystem` fits, serves and
unlearns exactly); ``methods/ties.py`` serves :func:`ties_merge`, and averaging and task
arithmetic are ``methods/basic.py``'s ``merge`` on the exact τ̄ of :mod:`clamu_helpers.core.ledger`.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .taskvector import TaskVector


def trim_top_k(x: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the top fraction ``k`` of entries of each row by magnitude (round(k·d), at least 1),
    zero the rest. (TIES's ``topk_values_mask`` keeps every entry at least as large as its
    threshold, one more than round(k·d) in general: immaterial at d in the thousands.)"""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x[None]
    n_keep = max(1, int(round(k * x2.shape[1])))
    if n_keep >= x2.shape[1]:
        return x.clone()
    idx = x2.abs().topk(n_keep, dim=1).indices
    out = torch.zeros_like(x2).scatter_(1, idx, x2.gather(1, idx))
    return out.reshape(x.shape)


def _vector_items(vectors):
    """(key, flat τ) pairs of a mapping, a sequence, or a zero-argument callable yielding pairs."""
    if callable(vectors):
        items = vectors()
    elif isinstance(vectors, Mapping):
        items = vectors.items()
    else:
        items = enumerate(vectors)
    for key, v in items:
        yield key, (v.values if isinstance(v, TaskVector) else v)


def ties_merge(vectors, k: float = 0.2) -> torch.Tensor:
    """TIES-merging's merged vector before λ (Yadav et al. 2023, as ``ties_merging`` with
    ``merge_func="dis-mean"``): trim each τ_t to its top-k magnitudes, elect a sign per
    coordinate by the sign of the trimmed sum (zeros take the majority sign, ``resolve_zero_signs``),
    and average the trimmed entries that agree with it (disjoint mean; 0 where none does).

    ``vectors``: a sequence, a mapping key → τ_t, or a zero-argument callable yielding (key, τ_t)
    pairs; it is read twice and never stacked (memory O(d)). Sums run in float64 in the order
    given, so the same vectors in the same order give the same bits."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    total = None
    for _, v in _vector_items(vectors):
        if total is not None and v.shape != total.shape:
            raise ValueError(f"task vectors differ in shape: {tuple(v.shape)} vs {tuple(total.shape)}")
        t = trim_top_k(v, k).to(torch.float64)
        total = t if total is None else total.add_(t)
    if total is None:
        raise ValueError("need at least one task vector to merge")
    sign = torch.sign(total)
    sign[sign == 0] = torch.sign(sign.sum())
    agg = torch.zeros_like(total)
    count = torch.zeros(total.shape, dtype=torch.int64, device=total.device)
    for _, v in _vector_items(vectors):
        t = trim_top_k(v, k).to(torch.float64)
        keep = torch.where(sign > 0, t > 0, t < 0)
        agg += torch.where(keep, t, t.new_zeros(()))
        count += keep
    return (agg / count.clamp_min(1)).to(torch.float32)
