"""Merging methods for comparison: small pure functions from task vectors to one vector.

Each takes a sequence of task vectors (``TaskVector`` or flat tensors) and returns the
merged flat vector τ_merged; the served model is M0 + τ_merged. ``MERGE_METHODS`` is the
registry (name → function), as in mergekit. These are the baselines; the exact, unlearnable
sum lives in :mod:`clamu_helpers.ledger`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .taskvector import TaskVector

Vectors = Sequence["TaskVector | torch.Tensor"]


def _stack(tvs: Vectors) -> torch.Tensor:
    if len(tvs) == 0:
        raise ValueError("need at least one task vector to merge")
    vals = [tv.values if isinstance(tv, TaskVector) else tv for tv in tvs]
    if len({v.shape for v in vals}) != 1:
        raise ValueError(f"task vectors differ in shape: {sorted({tuple(v.shape) for v in vals})}")
    return torch.stack(vals)


def merge_sum(tvs: Vectors) -> torch.Tensor:
    """τ̄ = Σ_t τ_t (float32; use the ledger where exactness matters)."""
    return _stack(tvs).sum(0)


def merge_average(tvs: Vectors) -> torch.Tensor:
    """τ̄ / T: model averaging."""
    return _stack(tvs).mean(0)


def task_arithmetic(tvs: Vectors, alpha: float = 1.0) -> torch.Tensor:
    """α τ̄ (Ilharco et al. 2023); α is tuned on validation data by the caller."""
    return float(alpha) * merge_sum(tvs)


def trim_top_k(x: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the top fraction ``k`` of entries of each row by magnitude, zero the rest."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x[None]
    n_keep = max(1, int(round(k * x2.shape[1])))
    idx = x2.abs().topk(n_keep, dim=1).indices
    out = torch.zeros_like(x2).scatter_(1, idx, x2.gather(1, idx))
    return out.reshape(x.shape)


def ties(tvs: Vectors, k: float = 0.2, lam: float = 1.0) -> torch.Tensor:
    """TIES-merging (Yadav et al. 2023): trim each τ_t to its top-k% magnitudes, elect a sign
    per coordinate by total mass, average the entries that agree with it (disjoint mean), and
    scale by λ. Coordinates where no entry agrees are 0."""
    trimmed = trim_top_k(_stack(tvs), k)
    elected = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    total = (trimmed * agree).sum(0)
    count = agree.sum(0).clamp_min(1)
    return float(lam) * total / count


MERGE_METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "sum": merge_sum,
    "average": merge_average,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
}
