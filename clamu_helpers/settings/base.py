"""A setting: a suite of tasks, a pretrained model M0, a loss and a metric, sized by a profile.

Every task is a potential forget set. A setting hands the rest of the kit plain tensors
(``Task.train = (x, y)``) and one ``nn.Module`` (M0), so the same finetuning, merging and
unlearning code runs on the embedded analogs, the paper's models, and a user's own model.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..core.params import ParamSpec, functional
from ..runtime.timing import EVALUATION, timed_function

#: the profiles (clamu_helpers.reproduction.profiles says what changes with each)
PROFILES = ("smoke", "cpu", "paper")




@dataclass(frozen=True)
class FinetuneConfig:
    """How each task is finetuned from M0 (identical for every task, recorded with τ_t).

    ``fused``: the optimizer's fused kernel (``torch.optim.Adam(..., fused=True)``; likewise
    AdamW and SGD; on the CPU and on CUDA) instead of the per-tensor loop (``foreach=False``).
    Both are deterministic, but for Adam and AdamW they round differently (other bits), so the
    flag is part of :meth:`to_json`, hence of every task-vector store key and recorded config: a
    τ_t of one pattern is never mixed with, or checked against, one of the other. The default is
    fused because it is faster here (``benchmarks/bench_fused_adam.py``; 2-core AMD EPYC VM,
    AVX2, torch 2.14.1, one thread, shared with another job, load 1.3-3; medians of 10 timings
    of 100 steps): one Adam step of the images MLP (784-256-256-30, 274k parameters) 990 µs
    instead of 2527 µs with ``foreach=False`` (AdamW 913 vs 2834 µs), of one BERT layer (hidden
    384, FFN 1536, 1.77M parameters) 5017 µs instead of 16132 µs (AdamW 5255 vs 21228 µs); a
    whole finetune of the images setting (``get_setting("images-label-subsets", "cpu", 0)``,
    task 0, 100 steps, median of 7) 302 ms instead of 444 ms (an earlier run: 555 vs 795 ms).
    Configs recorded before the flag existed have no ``fused`` key: they were trained with
    ``fused=False`` (:meth:`from_json` reads them so), and a system saved then loads with a
    setting built with ``FinetuneConfig(..., fused=False)``.
    """

    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adam"       # "adam" | "adamw" | "sgd"
    weight_decay: float = 0.0
    threads: int = 1              # pinned during finetuning: bits depend on it on the CPU
    precision: str = "float32"    # "float32" | "bf16" (bfloat16 autocast forward; τ_t stays float32)
    fused: bool = True            # fused optimizer kernel (other bits than foreach=False; see above)

    def __post_init__(self):
        from ..runtime.device import check_precision
        check_precision(self.precision)
        if not isinstance(self.fused, bool):
            raise TypeError(f"FinetuneConfig.fused must be True or False, got {self.fused!r}")

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, record: dict) -> "FinetuneConfig":
        """The config :meth:`to_json` recorded; a record written before ``fused`` existed
        (no such key) was trained with the per-tensor optimizer, so it reads as ``fused=False``."""
        return cls(**{"fused": False, **record})


@dataclass(eq=False)
class Task:
    """One task (client, user, author): its own training, validation and test data."""

    task_id: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    labels: tuple[int, ...] = ()
    source: str = ""
    info: dict = field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 of the task's training data: part of every cache key for τ_t."""
        from ..core.taskvector import sha256_tensor
        h = hashlib.sha256(self.task_id.encode())
        for t in self.train:
            h.update(sha256_tensor(t).encode())
        return h.hexdigest()

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, name)


class Setting:
    """Base class. Subclasses fill ``tasks``, build M0 in ``build_pretrained`` and may
    override ``loss`` and ``score`` (accuracy by default)."""

    name: str = "setting"
    description: str = ""
    num_classes: int = 0
    #: the revision of the setting's training computation (:meth:`batch_loss`, the model's
    #: forward): changed when a new kernel changes the bits of τ_t, it enters every τ_t's store
    #: key, so no τ_t of the old computation is served or checked against the new one
    revision: str = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "score" in cls.__dict__:  # a subclass's metric is timed as evaluation too (clamu_helpers.runtime.timing)
            cls.score = timed_function(EVALUATION)(cls.__dict__["score"])

    def __init__(self, profile: str = "cpu", seed: int = 0, finetune: FinetuneConfig | None = None):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
        self.profile = profile
        self.seed = int(seed)
        self.finetune_config = finetune or FinetuneConfig()
        self.tasks: list[Task] = []

    # -- model -------------------------------------------------------------------------
    def build_pretrained(self) -> nn.Module:
        raise NotImplementedError

    @cached_property
    def model(self) -> nn.Module:
        """M0 (built once per process; subclasses cache it on disk by content hash). Built with
        gradients enabled: the first access may come from a ``no_grad`` context (``predict``,
        feature clustering) while building may pretrain (authors, images, synthetic)."""
        with torch.enable_grad():
            m = self.build_pretrained()
        m.eval()
        return m

    def trainable(self, name: str) -> bool:
        """Which parameters finetuning changes (default: all)."""
        return True

    @property
    def device(self) -> torch.device:
        """Where M0 (and so θ0) lives: where systems on this setting compute by default."""
        from ..runtime.device import module_device
        return module_device(self.model)

    def to(self, device: "str | torch.device") -> "Setting":
        """Move M0 to ``device`` (checked by :func:`clamu_helpers.runtime.device.resolve`): finetuning,
        evaluation and mask optimisation then run there. θ0, the task data and everything exact
        (ledger, τ_t, masks) stay on the CPU; weights and batches move to the device as used."""
        from ..runtime.device import resolve
        dev = resolve(device)
        if dev != self.device:
            self.model.to(dev)
        return self

    @cached_property
    def spec(self) -> ParamSpec:
        return ParamSpec.from_model(self.model, self.trainable)

    @cached_property
    def theta0(self) -> torch.Tensor:
        """M0's trained parameters as a flat float32 vector θ0, on the CPU (like all exact state)."""
        return self.spec.flatten(self.model).to("cpu", copy=True)

    # -- loss and metric ---------------------------------------------------------------
    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, y)

    def batch_loss(self, forward: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one mini-batch, where ``forward(x)`` runs the model being trained
        (M0's copy in finetuning, M0 with the masked weights M0 + α m ⊙ τ̄ in ClAMU's mask
        optimisation): ``loss(forward(x), y)``. A setting whose loss reads only part of the
        model's output may run less of the model (the authors setting computes its output
        layer at answer positions only); the loss must equal ``loss(forward(x), y)`` up to
        float rounding, which its tests check."""
        return self.loss(forward(x), y)

    @torch.no_grad()
    def predict(self, weights: torch.Tensor, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """M0 with ``weights`` applied to ``x``, in batches, on :attr:`device` (the output stays there)."""
        weights = weights.to(self.device)
        outs = [functional(self.model, self.spec, weights, x[i:i + batch]) for i in range(0, len(x), batch)]
        return torch.cat(outs)

    @timed_function(EVALUATION)
    def score(self, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
        """The metric of served weights on (x, y): accuracy in the global label space."""
        if len(y) == 0:
            return float("nan")
        pred = self.predict(weights, x).argmax(-1)
        return float((pred == y.to(pred.device)).float().mean())

    metric_name = "accuracy"

    def mean_score(self, weights, ids, split: str = "test") -> float:
        """Mean :meth:`score` over tasks ``ids`` on their own ``split``; ``weights`` is one
        flat vector for all, or a function task id → weights (NaN for no tasks)."""
        ids = list(ids)
        if not ids:
            return float("nan")
        get = weights if callable(weights) else (lambda _t: weights)
        return float(sum(self.score(get(t), *self.task(t).split(split)) for t in ids) / len(ids))

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]

    def task(self, task_id: str) -> Task:
        from ..core.errors import UnknownTaskError
        try:
            return self._by_id[str(task_id)]
        except KeyError:
            raise UnknownTaskError(f"setting {self.name!r} has no task {task_id!r}") from None

    @cached_property
    def _by_id(self) -> dict[str, Task]:
        return {t.task_id: t for t in self.tasks}

    def subset(self, n: int) -> "Setting":
        """The same setting restricted to its first ``n`` tasks (shares M0 and data)."""
        import copy
        other = copy.copy(self)
        other.tasks = self.tasks[:n]
        other.__dict__.pop("_by_id", None)
        return other

    def describe(self) -> dict:
        return {"setting": self.name, "profile": self.profile, "seed": self.seed,
                "tasks": len(self.tasks), "parameters": self.spec.numel,
                "finetune": self.finetune_config.to_json(), "metric": self.metric_name}


@torch.no_grad()
def batched_features(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     batch: int = 256) -> torch.Tensor:
    """``fn(x)`` in batches of ``batch`` rows, as (N, h) float32: M0's features for feature
    clustering (a setting's ``cluster_features``). Runs without gradients, with ``model`` in eval
    mode (restored afterwards) and one pinned thread (:func:`~clamu_helpers.runtime.determinism.deterministic`),
    so the features are bit-stable whatever the machine's core count; batching bounds memory."""
    from ..runtime.determinism import deterministic
    was_training = model.training
    model.eval()
    try:
        with deterministic(1):
            out = [fn(x[i:i + batch]).detach().to(torch.float32) for i in range(0, len(x), batch)]
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("no inputs to take features from")
    return torch.cat(out).reshape(len(x), -1)


SettingFactory = Callable[..., Setting]
