"""Deterministic finetuning of one task from M0, optionally sign-fixed (SIFT-Masks).

``finetune(setting, task, seed)`` returns τ_t = M_t − M0 as a :class:`TaskVector`. The same
task, seed, config and environment give the same bits: data order comes from an explicit
generator seeded by (seed, task id), the global RNG (dropout) is forked and seeded the same
way, threads are pinned and deterministic algorithms are on.

Sign-fixed tuning: given the global sign vector v ∈ {−1, +1}^d, coordinates where
τ_t ⊙ v ≤ 0 are reset to M0, so τ_t ⊙ v ≥ 0 and m_t = 1{τ_t ≠ 0}. ``projection`` says when:
``"after_step"`` (default: after every optimizer step) or ``"before_step"`` (between backward
and the step, as the final paper's algorithm box writes it); either way a last projection
runs after the final step, so the constraint holds for the returned τ_t.

Device: ``device`` (default: where M0 lives) is where the copy of M0 trains; each mini-batch
is moved there as it is drawn (the data order is drawn on the CPU either way), the global RNG
of that device is forked and seeded, and τ_t comes back on the CPU as float32 (it is hashed,
stored, merged into the CPU ledger and shipped between processes from there).
``config.precision="bf16"`` runs the forward pass under bfloat16 autocast
(:mod:`clamu_helpers.runtime.device`).
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import torch

from ..runtime import device as device_
from ..runtime.determinism import deterministic, fingerprint_of, generator, stable_seed
from ..core.taskvector import TaskVector, sha256_tensor
from ..runtime.timing import FINETUNE, timed_function

if TYPE_CHECKING:
    from ..settings.base import FinetuneConfig, Setting, Task

PROJECTIONS = ("after_step", "before_step")


def _optimizer(params, cfg: "FinetuneConfig") -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names, with its fused kernel (``cfg.fused``, the default; CPU and
    CUDA) or the per-tensor loop (``foreach=False``): deterministic either way, other bits."""
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.fused:
        kw["fused"] = True
    else:
        kw["foreach"] = False
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **kw)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kw)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, **kw)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use adam, adamw or sgd")


def batches(n: int, batch_size: int, steps: int, g: torch.Generator):
    """Indices of ``steps`` mini-batches: epochs of explicit-generator permutations."""
    perm, pos = torch.randperm(n, generator=g, device="cpu"), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = (torch.randperm(n, generator=g, device="cpu"), 0) if batch_size <= n else (perm, 0)
        yield perm[pos:pos + batch_size]
        pos += batch_size


@torch.no_grad()
def _project(params, inits, signs) -> None:
    """τ ← τ ⊙ 1{τ ⊙ v > 0}, per tensor (``torch.where`` is faster than boolean indexing)."""
    for p, p0, v in zip(params, inits, signs):
        p.copy_(torch.where((p - p0) * v > 0, p, p0))


@timed_function(FINETUNE)
def finetune(setting: "Setting", task: "Task", seed: int = 0, config: "FinetuneConfig | None" = None,
             sign: torch.Tensor | None = None, projection: str = "after_step",
             device: str | torch.device | None = None) -> TaskVector:
    """Finetune M0 on ``task`` alone and return τ_t (see the module docstring)."""
    cfg = config or setting.finetune_config
    dev = device_.resolve(device) if device is not None else setting.device
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    spec, m0 = setting.spec, setting.model
    x, y = task.train
    if len(y) == 0:
        raise ValueError(f"task {task.task_id!r} has no training data")
    t0 = time.perf_counter()
    with deterministic(cfg.threads, dev), device_.fork_rng(dev):
        torch.manual_seed(stable_seed(seed, "global-rng", task.task_id))
        model = copy.deepcopy(m0).to(dev)
        model.train()
        named = dict(model.named_parameters())
        for n, p in named.items():
            p.requires_grad_(n in spec.names)
        params = [named[n] for n in spec.names]
        inits = [p.detach().clone() for p in params]
        signs = None
        if sign is not None:
            spec.check(sign, "sign vector v")
            signs = [s.view(shape) for s, shape in zip(torch.split(sign.to(dev), spec.sizes), spec.shapes)]
        opt = _optimizer(params, cfg)
        g = generator(seed, "data-order", task.task_id)
        for idx in batches(len(y), cfg.batch_size, cfg.steps, g):
            opt.zero_grad(set_to_none=True)
            with device_.autocast(dev, cfg.precision):
                loss = setting.batch_loss(model, x[idx].to(dev), y[idx].to(dev))
            loss.backward()
            if signs is not None and projection == "before_step":
                _project(params, inits, signs)
            opt.step()
            if signs is not None and projection == "after_step":
                _project(params, inits, signs)
        if signs is not None:
            _project(params, inits, signs)
        tau = torch.cat([(p.detach() - p0).reshape(-1) for p, p0 in zip(params, inits)]).cpu()
    meta = {"setting": setting.name, "task_digest": task.digest(), "seed": int(seed),
            "config": cfg.to_json(), "fingerprint": fingerprint_of(cfg, dev),
            "sign": sha256_tensor(sign) if sign is not None else None, "projection": projection,
            "steps": cfg.steps, "seconds": time.perf_counter() - t0}
    return TaskVector(task.task_id, tau.contiguous(), spec, meta)
