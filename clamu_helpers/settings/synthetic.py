"""A tiny synthetic setting for tests and for learning the API in seconds.

Gaussian class blobs in ``dim`` dimensions, ``classes`` global labels, each task drawing from
a subset of ``labels_per_task`` labels (the label-subset structure that makes merging hard).
M0 is a small MLP trained briefly on a pool disjoint from every task. Everything is seeded.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..runtime.determinism import deterministic, generator
from .base import FinetuneConfig, Setting, Task


class SyntheticSetting(Setting):
    name = "synthetic"
    description = "Gaussian blobs, label subsets per task (tests and teaching)"

    def __init__(self, profile: str = "smoke", seed: int = 0, tasks: int = 8, dim: int = 16, classes: int = 6,
                 labels_per_task: int = 2, n_train: int = 24, n_val: int = 8, n_test: int = 24,
                 hidden: int = 32, finetune: FinetuneConfig | None = None):
        super().__init__(profile, seed, finetune or FinetuneConfig(steps=15, lr=1e-2, batch_size=8))
        self.num_classes, self.dim, self.hidden = classes, dim, hidden
        g = generator(seed, "synthetic-centres")
        self.centres = torch.randn(classes, dim, generator=g) * 1.5
        self.pool = self._sample(torch.arange(classes).repeat(3), generator(seed, "pool"))
        self.tasks = []
        for t in range(tasks):
            gt = generator(seed, "synthetic-task", t)
            labels = torch.randperm(classes, generator=gt)[:labels_per_task].sort().values
            parts = [self._sample(labels[torch.randint(len(labels), (n,), generator=gt)], gt)
                     for n in (n_train, n_val, n_test)]
            self.tasks.append(Task(f"s{t:02d}", *parts, labels=tuple(labels.tolist()), source="blobs"))

    def _sample(self, y: torch.Tensor, g: torch.Generator):
        x = self.centres[y] + torch.randn(len(y), self.dim, generator=g)
        return x, y

    def build_pretrained(self) -> nn.Module:
        model = nn.Sequential(nn.Linear(self.dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.num_classes))
        g = generator(self.seed, "synthetic-init")
        with torch.no_grad(), deterministic(1):
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        x, y = self.pool
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with deterministic(1):
            for _ in range(20):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        return model
