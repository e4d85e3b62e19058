"""Loaders for the paper's data, in the formats they are published in (no downloads).

Expected layout under the data directory (``$CLAMU_DATA``, default ``~/clamu_data``)::

    sent140/   LEAF Sent140 JSON: all_data/*.json (or *.json directly in the folder)
    reddit/    LEAF Reddit JSON:  all_data/*.json, or train/ val/ test/ *.json merged per user
    tofu/full.json                TOFU (locuslab/TOFU, "full" split): JSON lines or a JSON array
    images/{dtd,resisc45,mnist}/<class_name>/*.jpg|png

**LEAF** files hold ``{"users": [...], "num_samples": [...], "user_data": {u: {"x": [...],
"y": [...]}}}``. Sent140: each ``x`` is ``[id, date, query, user, text, ...]`` (text at index
4), ``y`` is 0/1. Reddit: each ``x`` is a comment, either a string (LEAF's ``get_json`` step)
or LEAF's preprocessed list of 10-token chunks (``<BOS>``/``<EOS>``/``<PAD>`` are dropped
and the tokens joined by spaces); ``y`` is a dict whose ``"subreddit"`` is the label (a
bare string is accepted too). Assumptions for the paper's 10-label Reddit setting (the draft
does not spell them out): the label space is the 10 most frequent subreddits over all loaded
comments (ties by name) unless ``subreddits`` is given; a user's task uses the user's two most
frequent of those subreddits (ties by name), each with at least ``min_per_label`` comments;
users are eligible when they have ``n_train + n_val + n_test`` such comments.

**TOFU** records have ``question`` and ``answer``; the 4,000 records are 200 fictitious
authors × 20 consecutive records, so author ``a`` is records ``20a … 20a+19``.

**Images**: each data set is an image folder; class names are the sorted folder names, and
the global label space concatenates DTD (47), RESISC45 (45) and MNIST (10) = 102 labels, in
that order. Images are decoded with PIL only for the examples a task uses.

(Over 300 lines on purpose: one loader per published format (LEAF JSON, TOFU, image folders),
each small, kept together because they share the missing-data messages.)
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..runtime.determinism import rng
from ..core.errors import ClamuError, MissingResourceError

IMAGE_DATASETS = ("dtd", "resisc45", "mnist")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
LEAF_SPECIAL = {"<BOS>", "<EOS>", "<PAD>"}


def _missing(what: str, path: Path, how: str) -> MissingResourceError:
    return MissingResourceError(f"{what} not found at {path}. {how} (data directory: $CLAMU_DATA, "
                                f"default ~/clamu_data)")


# -- LEAF -------------------------------------------------------------------------------------
def leaf_files(path: str | Path) -> list[Path]:
    """The JSON files of a LEAF data set: a file, ``path/all_data/*.json``, ``path/*.json``,
    or the ``train``/``val``/``test`` sub-folders (merged per user)."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    for pattern in ("all_data/*.json", "*.json", "train/*.json"):
        files = sorted(path.glob(pattern))
        if files:
            if pattern == "train/*.json":
                files = sorted(f for sub in ("train", "val", "test") for f in (path / sub).glob("*.json"))
            return files
    raise _missing("LEAF JSON files", path, "Get them with LEAF's scripts (github.com/TalwalkarLab/leaf, "
                   "data/<name>/preprocess.sh) and copy data/all_data/*.json there")


def read_leaf(path: str | Path) -> dict[str, dict[str, list]]:
    """Per user (in file order) the concatenated ``{"x": [...], "y": [...]}`` of all files."""
    out: dict[str, dict[str, list]] = {}
    for f in leaf_files(path):
        with open(f) as fh:
            d = json.load(fh)
        if not {"users", "user_data"} <= set(d):
            raise ClamuError(f"{f} is not LEAF JSON (needs 'users' and 'user_data')")
        for u in d["users"]:
            ud = d["user_data"][u]
            if len(ud["x"]) != len(ud["y"]):
                raise ClamuError(f"{f}: user {u!r} has {len(ud['x'])} inputs but {len(ud['y'])} labels")
            slot = out.setdefault(str(u), {"x": [], "y": []})
            slot["x"].extend(ud["x"])
            slot["y"].extend(ud["y"])
    return out


def sent140_examples(leaf: dict) -> dict[str, list[tuple[str, int]]]:
    """(tweet text, 0/1) per user from LEAF Sent140 (text at index 4 of each ``x``)."""
    return {u: [(str(x[4]), int(y)) for x, y in zip(d["x"], d["y"])] for u, d in leaf.items()}


def reddit_text(x) -> str:
    """A LEAF Reddit comment as text (string, or list of token chunks without specials)."""
    if isinstance(x, str):
        return x
    toks = [t for chunk in x for t in (chunk if isinstance(chunk, list) else [chunk]) if t not in LEAF_SPECIAL]
    return " ".join(toks)


def reddit_examples(leaf: dict) -> dict[str, list[tuple[str, str]]]:
    """(comment text, subreddit) per user from LEAF Reddit."""
    return {u: [(reddit_text(x), str(y["subreddit"] if isinstance(y, dict) else y)) for x, y in zip(d["x"], d["y"])]
            for u, d in leaf.items()}


# -- text tasks -------------------------------------------------------------------------------
@dataclass
class TextTask:
    """One user's examples as (text, global label index) lists, split three ways."""

    user: str
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    labels: tuple[int, ...]
    info: dict = field(default_factory=dict)


def split_three(items: list, key: Sequence, seed: int, n_train: int | None, n_val: int, n_test: int,
                val_fraction: float = 0.1, test_fraction: float = 0.1):
    """Seeded shuffle of ``items``, then (train, val, test). With ``n_train=None`` the sizes
    are fractions (at least one each) and train gets the rest."""
    perm = [items[i] for i in rng(seed, "split", *key).permutation(len(items))]
    if n_train is None:
        nv = max(1, round(val_fraction * len(items)))
        nt = max(1, round(test_fraction * len(items)))
        return perm[nv + nt:], perm[:nv], perm[nv:nv + nt]
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:n_train + n_val + n_test]


def sent140_tasks(path: str | Path, tasks: int, seed: int = 0, min_samples: int = 10,
                  require_both_labels: bool = True, val_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> list[TextTask]:
    """Sent140 tasks = users with ≥ ``min_samples`` tweets (and both labels, by default), in a
    seeded order; each user's tweets are split train/val/test by fractions."""
    users = sent140_examples(read_leaf(path))
    ok = [u for u in sorted(users) if len(users[u]) >= max(3, min_samples)
          and (not require_both_labels or len({y for _, y in users[u]}) == 2)]
    order = [ok[i] for i in rng(seed, "sent140-users").permutation(len(ok))][:tasks]
    out = []
    for u in order:
        tr, va, te = split_three(users[u], ("sent140", u), seed, None, 0, 0, val_fraction, test_fraction)
        out.append(TextTask(u, tr, va, te, (0, 1), {"examples": len(users[u])}))
    return out


def top_subreddits(examples: dict[str, list[tuple[str, str]]], k: int = 10) -> list[str]:
    counts = Counter(s for ex in examples.values() for _, s in ex)
    return [s for s, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def reddit_tasks(path: str | Path, tasks: int, seed: int = 0, subreddits: Sequence[str] | None = None,
                 labels_per_task: int = 2, n_train: int = 100, n_val: int = 10, n_test: int = 10,
                 min_per_label: int = 5) -> tuple[list[TextTask], list[str]]:
    """Reddit tasks (see the module docstring) and the global label names."""
    users = reddit_examples(read_leaf(path))
    names = list(subreddits) if subreddits else top_subreddits(users)
    index = {s: i for i, s in enumerate(names)}
    need = n_train + n_val + n_test
    eligible = []
    for u in sorted(users):
        ex = [(t, index[s]) for t, s in users[u] if s in index]
        counts = Counter(y for _, y in ex)
        top = sorted(counts, key=lambda y: (-counts[y], y))[:labels_per_task]
        if len(top) < labels_per_task or min(counts[y] for y in top) < min_per_label:
            continue
        ex = [e for e in ex if e[1] in top]
        if len(ex) >= need:
            eligible.append((u, ex, tuple(sorted(top))))
    pick = rng(seed, "reddit-users").permutation(len(eligible))[:tasks]
    out = []
    for i in pick:
        u, ex, labels = eligible[i]
        tr, va, te = split_three(ex, ("reddit", u), seed, n_train, n_val, n_test)
        out.append(TextTask(u, tr, va, te, labels, {"examples": len(ex)}))
    return out, names


# -- TOFU -------------------------------------------------------------------------------------
def read_tofu(path: str | Path, per_author: int = 20) -> list[list[tuple[str, str]]]:
    """TOFU (question, answer) pairs grouped by author: consecutive blocks of ``per_author``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise _missing("TOFU file", path, "Download `full.json` of the Hugging Face data set locuslab/TOFU "
                       "(`huggingface-cli download locuslab/TOFU full.json --repo-type dataset`) and copy it there")
    text = path.read_text()
    stripped = text.lstrip()
    records = json.loads(text) if stripped.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    if len(records) % per_author:
        raise ClamuError(f"{path}: {len(records)} records is not a multiple of {per_author} per author")
    for r in records:
        if not {"question", "answer"} <= set(r):
            raise ClamuError(f"{path}: TOFU records need 'question' and 'answer' fields, got {sorted(r)}")
    pairs = [(str(r["question"]), str(r["answer"])) for r in records]
    return [pairs[i:i + per_author] for i in range(0, len(pairs), per_author)]


# -- images -----------------------------------------------------------------------------------
@dataclass
class ImageFolder:
    """File list of one image-folder data set with labels in the global label space."""

    name: str
    classes: list[str]
    files: list[Path]
    labels: np.ndarray   # global labels
    offset: int


def scan_image_folder(root: str | Path, name: str, offset: int = 0) -> ImageFolder:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _missing(f"image data set {name!r}", root, f"Put it there as {root}/<class_name>/*.jpg|png "
                       "(DTD, RESISC45 and MNIST, e.g. exported from torchvision or Hugging Face)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for i, c in enumerate(classes):
        fs = sorted(f for f in (root / c).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        files += fs
        labels += [offset + i] * len(fs)
    if not files:
        raise _missing(f"images of {name!r}", root, "Expected <class_name>/*.jpg|png sub-folders")
    return ImageFolder(name, classes, files, np.asarray(labels, dtype=np.int64), offset)


def scan_image_datasets(root: str | Path, names: Sequence[str] = IMAGE_DATASETS) -> list[ImageFolder]:
    """Every data set under ``root/<name>``, with consecutive global label offsets."""
    out, offset = [], 0
    for n in names:
        ds = scan_image_folder(Path(root) / n, n, offset)
        out.append(ds)
        offset += len(ds.classes)
    return out


def load_image(path: Path, size: int) -> torch.Tensor:
    """``(3, size, size)`` uint8: RGB, shorter side resized to ``size`` (bicubic), center crop
    (open_clip's preprocessing before normalization)."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_images(files: Sequence[Path], size: int) -> torch.Tensor:
    if not len(files):
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.stack([load_image(f, size) for f in files])


@dataclass
class ImageTaskSpec:
    """Which files (by index into ``dataset.files``) make up one task's splits."""

    dataset: str
    labels: tuple[int, ...]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def image_task_specs(datasets: Sequence[ImageFolder], partition: str, tasks: int, seed: int = 0,
                     n_train: int = 100, n_val: int = 10, n_test: int = 50, test_fraction: float = 0.2,
                     labels_per_task: tuple[int, int] = (2, 5)) -> tuple[list[ImageTaskSpec], dict[str, bool]]:
    """Tasks as the draft builds CLIP (i)/(ii): task t uses data set ``t mod 3``; ``uniform``
    samples all its labels, ``label-subsets`` one of its disjoint 2–5 label subsets (cycled).
    Each data set holds out ``test_fraction`` as the test pool; training/validation examples
    are unique across tasks until a pool runs out, then reused cyclically (reported)."""
    from .images import label_partition
    if partition not in ("uniform", "label-subsets"):
        raise ClamuError(f"partition must be 'uniform' or 'label-subsets', got {partition!r}")
    pools, tests, groups = {}, {}, []
    for ds in datasets:
        perm = rng(seed, "image-split", ds.name).permutation(len(ds.files))
        n_te = int(round(test_fraction * len(perm)))
        tests[ds.name], pools[ds.name] = perm[:n_te], perm[n_te:]
        labs = sorted(set(ds.labels.tolist()))
        subs = [tuple(labs)] if partition == "uniform" else label_partition(labs, seed, labels_per_task)
        groups.append([(ds, s) for s in subs])
    cursor, reused, out = {}, {}, []
    for t in range(tasks):
        ds_groups = groups[t % len(groups)]
        ds, labels = ds_groups[(t // len(groups)) % len(ds_groups)]
        key = (ds.name, labels)
        pool = pools[ds.name][np.isin(ds.labels[pools[ds.name]], labels)]
        if not len(pool):
            raise ClamuError(f"{ds.name}: no training images for labels {labels}")
        start = cursor.get(key, 0)
        n = n_train + n_val
        idx = pool[np.arange(start, start + n) % len(pool)]
        cursor[key] = start + n
        if cursor[key] > len(pool):
            reused[ds.name] = True
        tpool = tests[ds.name][np.isin(ds.labels[tests[ds.name]], labels)]
        te = tpool[rng(seed, "image-test", t).permutation(len(tpool))[:n_test]]
        out.append(ImageTaskSpec(ds.name, tuple(labels), idx[:n_train], idx[n_train:], te))
    return out, reused
