"""The paper's settings on its own models and data (draft Table 6), for real runs.

``paper-clip-uniform`` / ``paper-clip-label-subsets`` (CLIP (i)/(ii): ViT-B-32 + text head on
DTD/RESISC45/MNIST), ``paper-sent140`` and ``paper-reddit`` (GPT-2 with a CLS or LM head),
``paper-tofu`` (GPT-2 causal LM, answer generation probability).

``model`` picks the weights: a GPT-2 name (``"gpt2"``, ``"gpt2-xl"``, ``"openai-community/gpt2"``
or a folder) or a CLIP pretrained tag (``"laion2b_s34b_b79k"``, ``"openai"`` or a checkpoint
file), all read locally; ``"tiny-random"`` builds the same architecture at toy size with
seeded random weights (and a byte tokenizer for GPT-2), so every code path runs offline.
Missing data or weights raise :class:`MissingResourceError` when the setting is built (never
on import). Profile ``paper`` follows the draft: 500 tasks (TOFU 200), 20 steps for text and
500 for CLIP; the learning rates are not in the draft and are our choice (parameters).

Feature clustering on the GPT-2 settings (``cluster_features``) uses the draft's "hidden
features at the last layer and last token of the model": GPT-2's final hidden state (after
``ln_f``) at the last real (non-padding) token of each row, whatever the head.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..core.params import functional
from . import paper_data as pdata
from . import paper_models as pm
from .base import FinetuneConfig, Setting, Task, batched_features

TINY = "tiny-random"


@dataclass(frozen=True)
class PaperProfile:
    tasks: int
    steps: int
    batch_size: int
    lr: float


TEXT_PROFILES = {"smoke": PaperProfile(4, 3, 4, 1e-3), "cpu": PaperProfile(50, 20, 8, 1e-4),
                 "paper": PaperProfile(500, 20, 16, 1e-4)}
TOFU_PROFILES = {"smoke": PaperProfile(3, 3, 4, 1e-3), "cpu": PaperProfile(20, 20, 4, 1e-4),
                 "paper": PaperProfile(200, 20, 4, 1e-4)}
CLIP_PROFILES = {"smoke": PaperProfile(6, 3, 4, 1e-3), "cpu": PaperProfile(30, 50, 16, 1e-5),
                 "paper": PaperProfile(500, 500, 32, 1e-5)}


def _config(profiles, profile, finetune):
    p = profiles[profile]
    return p, finetune or FinetuneConfig(steps=p.steps, lr=p.lr, batch_size=p.batch_size)


def encode_prompt(tok, template: str, text: str, max_tokens: int) -> list[int]:
    """``template`` with ``{text}``, tokenized piecewise; only the text is truncated so the
    instruction after it (e.g. "Sentiment:") always survives."""
    pre, post = template.split("{text}")
    a, b = tok.encode(pre) if pre else [], tok.encode(post) if post else []
    return a + tok.encode(text)[:max(0, max_tokens - len(a) - len(b))] + b


class _GPT2Mixin:
    """Loads GPT-2 (or the tiny random one) and its tokenizer once, in ``__init__``."""

    def _load_gpt2(self, model: str, data_dir, seed: int):
        if model == TINY:
            self._lm, self.tokenizer = pm.tiny_gpt2(seed), pm.ByteTokenizer()
        else:
            self._lm, self.tokenizer = pm.load_gpt2(model, data_dir)
        self.model_name = model

    def trainable(self, name: str) -> bool:
        return self.model.is_trained(name)


class PaperTextSetting(_GPT2Mixin, Setting):
    """Sent140 or Reddit (LEAF) with GPT-2: tasks are users; ``head`` is ``"cls"`` or ``"lm"``.
    Feature clustering uses :meth:`cluster_features` (last layer, last real token)."""

    TEMPLATES = {"sent140": "Tweet: {text}\nSentiment:", "reddit": "Comment: {text}\nSubreddit:"}

    def __init__(self, dataset: str = "sent140", profile: str = "paper", seed: int = 0, model: str = "gpt2",
                 head: str = "cls", data_dir=None, path=None, tasks: int | None = None,
                 finetune: FinetuneConfig | None = None, max_tokens: int = 64, lm_scoring: str = "auto",
                 train_top_k: int | None = None, template: str | None = None, **loader_kw):
        if dataset not in self.TEMPLATES:
            raise ValueError(f"dataset must be 'sent140' or 'reddit', got {dataset!r}")
        size, cfg = _config(TEXT_PROFILES, profile, finetune)
        super().__init__(profile, seed, cfg)
        self.name, self.dataset, self.head = f"paper-{dataset}", dataset, head
        self.lm_scoring, self.train_top_k = lm_scoring, train_top_k
        self.template = template or self.TEMPLATES[dataset]
        src = Path(path) if path else pm.data_dir(data_dir) / dataset
        n = size.tasks if tasks is None else int(tasks)
        if dataset == "sent140":
            raw = pdata.sent140_tasks(src, n, seed, **loader_kw)
            self.class_names = ["negative", "positive"]
        else:
            raw, self.class_names = pdata.reddit_tasks(src, n, seed, **loader_kw)
        self.num_classes = len(self.class_names)
        self.description = f"{dataset} users with GPT-2 ({model}, {head} head)"
        self._load_gpt2(model, data_dir, seed)
        self.tasks = [self._task(t, max_tokens) for t in raw]

    def _task(self, t: pdata.TextTask, max_tokens: int) -> Task:
        def enc(items):
            x = pm.pad_batch([encode_prompt(self.tokenizer, self.template, s, max_tokens) for s, _ in items])
            return x, torch.tensor([y for _, y in items], dtype=torch.int64)
        return Task(f"u-{t.user}", enc(t.train), enc(t.val), enc(t.test), labels=t.labels, source=self.dataset,
                    info=dict(t.info, user=t.user))

    def build_pretrained(self) -> nn.Module:
        names = [self.tokenizer.encode(" " + c) for c in self.class_names]
        return pm.GPT2Classifier(self._lm, self.num_classes, self.head, names, self.lm_scoring, self.seed,
                                 self.train_top_k)

    @torch.no_grad()
    def predict(self, weights, x, batch: int = 64):
        return super().predict(weights, x, batch)

    def cluster_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features for feature clustering: M0's final hidden state at the last real token of
        each prompt, ``self.model.hidden(x)``, ``(N, n_embd)``; the same for the CLS and LM heads
        (and for either LM scoring). Batched, no gradients, one pinned thread."""
        return batched_features(self.model, self.model.hidden, x, batch=64)


class PaperTofuSetting(_GPT2Mixin, Setting):
    """TOFU with a GPT-2 causal LM: tasks are authors (20 QA pairs); the loss is the NLL of the
    answer tokens (+ EOS); the metric is the mean answer probability exp(−NLL/|answer|) (TOFU's
    length-normalized probability) on the author's own pairs (val and test = train: TOFU
    measures memorisation of the forget/retain set). Feature clustering uses
    :meth:`cluster_features` (last layer, last real token of prompt + answer)."""

    metric_name = "answer_probability"
    TEMPLATE = "Question: {q}\nAnswer:"

    def __init__(self, profile: str = "paper", seed: int = 0, model: str = "gpt2", data_dir=None, path=None,
                 tasks: int | None = None, finetune: FinetuneConfig | None = None, max_tokens: int = 256,
                 train_top_k: int | None = None):
        size, cfg = _config(TOFU_PROFILES, profile, finetune)
        super().__init__(profile, seed, cfg)
        self.name, self.description = "paper-tofu", f"TOFU authors with GPT-2 ({model}) as a causal LM"
        self.num_classes, self.train_top_k = 0, train_top_k
        authors = pdata.read_tofu(Path(path) if path else pm.data_dir(data_dir) / "tofu" / "full.json")
        self._load_gpt2(model, data_dir, seed)
        n = size.tasks if tasks is None else int(tasks)
        self.tasks = []
        for a, pairs in enumerate(authors[:n]):
            xy = self.encode(pairs, max_tokens)
            self.tasks.append(Task(f"a{a:03d}", xy, xy, xy, source="tofu", info={"author": a}))

    def encode(self, pairs: Sequence[tuple[str, str]], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` = prompt + answer + EOS token ids (PAD −1); ``y`` = the same ids on answer/EOS
        positions and −100 elsewhere."""
        xs, ys = [], []
        for q, a in pairs:
            p = self.tokenizer.encode(self.TEMPLATE.format(q=q))
            ans = self.tokenizer.encode(" " + a) + [self.tokenizer.eos_token_id]
            ids = (p + ans)[:max_tokens]
            xs.append(ids)
            ys.append(([-100] * len(p) + ans)[:max_tokens])
        return pm.pad_batch(xs), pm.pad_batch(ys, value=-100)

    def build_pretrained(self) -> nn.Module:
        return pm.GPT2CausalLM(self._lm, self.train_top_k)

    def cluster_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features for feature clustering: M0's final hidden state at the last real token of
        each row (the answer's EOS unless truncated), ``self.model.hidden(x)``, ``(N, n_embd)``.
        Batched, no gradients, one pinned thread."""
        return batched_features(self.model, self.model.hidden, x, batch=64)

    def loss(self, output, y):
        nll, count = pm.answer_nll(output, y)
        return nll.sum() / count.sum().clamp_min(1)

    @torch.no_grad()
    def score(self, weights, x, y, batch: int = 8) -> float:
        if len(y) == 0:
            return float("nan")
        probs, weights = [], weights.to(self.device)
        for i in range(0, len(x), batch):
            nll, count = pm.answer_nll(functional(self.model, self.spec, weights, x[i:i + batch]),
                                       y[i:i + batch].to(weights.device))
            probs.append(torch.exp(-nll / count.clamp_min(1)))
        return float(torch.cat(probs).mean())


class PaperClipSetting(Setting):
    """CLIP (i)/(ii): ViT-B-32 vision encoder with a head from the text encoder's class-name
    embeddings, on DTD/RESISC45/MNIST image folders (102 global labels)."""

    def __init__(self, partition: str = "uniform", profile: str = "paper", seed: int = 0,
                 model: str = "laion2b_s34b_b79k", arch: str = "ViT-B-32", data_dir=None, path=None,
                 tasks: int | None = None, finetune: FinetuneConfig | None = None, n_train: int = 100,
                 n_val: int = 10, n_test: int = 50, train_head: bool = False, train_top_k: int | None = None,
                 template: str = "a photo of a {}.", datasets: Sequence[str] = pdata.IMAGE_DATASETS, **spec_kw):
        size, cfg = _config(CLIP_PROFILES, profile, finetune)
        super().__init__(profile, seed, cfg)
        self.partition, self.name = partition, f"paper-clip-{partition}"
        self.description = f"CLIP ({'i' if partition == 'uniform' else 'ii'}): {arch} on {'/'.join(datasets)}"
        root = Path(path) if path else pm.data_dir(data_dir) / "images"
        folders = pdata.scan_image_datasets(root, datasets)
        self.class_names = [c.replace("_", " ") for ds in folders for c in ds.classes]
        self.num_classes = len(self.class_names)
        if model == TINY:
            self._clip, self._tokenizer = pm.tiny_clip(seed)
        else:
            self._clip, self._tokenizer = pm.load_clip(arch, model, data_dir)
        self.model_name, self.template = model, template
        self.train_head, self.train_top_k = train_head, train_top_k
        s = self._clip.visual.image_size
        self.image_size = int(s[0] if isinstance(s, (tuple, list)) else s)
        n = size.tasks if tasks is None else int(tasks)
        specs, self.reused = pdata.image_task_specs(folders, partition, n, seed, n_train, n_val, n_test, **spec_kw)
        by_name = {ds.name: ds for ds in folders}
        cache: dict = {}

        def take(ds, idx):
            missing = [int(i) for i in idx if (ds.name, int(i)) not in cache]
            for i, img in zip(missing, pdata.load_images([ds.files[i] for i in missing], self.image_size)):
                cache[(ds.name, i)] = img
            x = torch.stack([cache[(ds.name, int(i))] for i in idx]) if len(idx) else \
                torch.zeros((0, 3, self.image_size, self.image_size), dtype=torch.uint8)
            return x, torch.as_tensor(ds.labels[idx], dtype=torch.int64)

        self.tasks = [Task(f"t{t:03d}", take(by_name[sp.dataset], sp.train), take(by_name[sp.dataset], sp.val),
                           take(by_name[sp.dataset], sp.test), labels=sp.labels, source=sp.dataset)
                      for t, sp in enumerate(specs)]

    def build_pretrained(self) -> nn.Module:
        return pm.clip_classifier(self._clip, self._tokenizer, self.class_names, templates=(self.template,),
                                  train_head=self.train_head, train_top_k=self.train_top_k)

    def trainable(self, name: str) -> bool:
        return self.model.is_trained(name)

    @torch.no_grad()
    def predict(self, weights, x, batch: int = 256):
        return super().predict(weights, x, batch)

    def describe(self) -> dict:
        d = super().describe()
        d.update(model=self.model_name, reused_examples=sorted(self.reused))
        return d


def _paper_available(relative: str, weights: str):
    def check() -> tuple[bool, str]:
        path = pm.data_dir() / relative
        if path.exists():
            return True, ""
        return False, (f"needs {path} ($CLAMU_DATA, default ~/clamu_data) and the {weights} weights; "
                       f"model='tiny-random' runs the code path without them")
    return check


def register() -> None:
    """Register the five paper settings (``model="tiny-random"`` runs them offline)."""
    from .registry import register_setting
    clip, gpt2 = "open_clip ViT-B-32", "GPT-2"
    register_setting("paper-clip-uniform", lambda profile="paper", seed=0, **kw: PaperClipSetting(
        "uniform", profile, seed, **kw), "CLIP (i) itself: ViT-B-32 on DTD/RESISC45/MNIST, uniform per task",
        available=_paper_available("images", clip), model="CLIP ViT-B-32 vision encoder, head from the CLIP text encoder")
    register_setting("paper-clip-label-subsets", lambda profile="paper", seed=0, **kw: PaperClipSetting(
        "label-subsets", profile, seed, **kw), "CLIP (ii) itself: ViT-B-32, label subsets per task",
        available=_paper_available("images", clip), model="CLIP ViT-B-32 vision encoder, head from the CLIP text encoder")
    register_setting("paper-sent140", lambda profile="paper", seed=0, **kw: PaperTextSetting(
        "sent140", profile, seed, **kw), "Sent140 itself: LEAF users, GPT-2", available=_paper_available("sent140", gpt2),
        model="GPT2-Small (the draft also GPT2-XL)")
    register_setting("paper-reddit", lambda profile="paper", seed=0, **kw: PaperTextSetting(
        "reddit", profile, seed, **kw), "Reddit itself: LEAF users, 10 subreddits, GPT-2",
        available=_paper_available("reddit", gpt2), model="GPT2-Small (the draft also GPT2-XL)")
    register_setting("paper-tofu", lambda profile="paper", seed=0, **kw: PaperTofuSetting(profile, seed, **kw),
                     "TOFU itself: 200 fictitious authors, GPT-2 causal LM", available=_paper_available("tofu/full.json", gpt2),
                     model="GPT2-Small causal LM (the draft also GPT2-XL)")
