"""Property tests of the exactness promise over random life cycles, for every method.

Hypothesis draws a fit on a random subset of tasks, then a random sequence of unlearn /
serve / save+load steps. After every step: the ledger equals a from-scratch
:class:`MergeLedger` of the remaining task vectors (added in a random order), the served
digest equals that of a system fitted from scratch on the remaining tasks, every served
model is bit-identical to the from-scratch one, and (SIFT) the masks of untouched tasks never
move. Then: the system refuses (``ExactnessError``, state unchanged) when a retrained τ_u
has one flipped bit, or when the thread count or a hyperparameter changed since the fit.
"""
import random
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clamu_helpers import parallel
from clamu_helpers.core.errors import ExactnessError
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.methods import METHODS
from clamu_helpers.settings.base import FinetuneConfig
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers.unlearning.system import UnlearningSystem
from clamu_helpers.core.taskvector import TaskVector

EXAMPLES = 12
STATS = {"sequences": 0, "steps": 0}

SETTING = SyntheticSetting(tasks=5)
IDS = SETTING.task_ids
_STORE_DIR = tempfile.TemporaryDirectory(prefix="clamu-prop-store-")
STORE = TaskVectorStore(_STORE_DIR.name)
_refs: dict = {}
_vecs: dict = {}


def new_system(method, store=STORE):
    return UnlearningSystem(SETTING, method, store=store, **METHODS[method].test_params)


def vectors(method):
    """τ_t of every task as this method finetunes them (SIFT: sign-fixed), computed directly."""
    if method not in _vecs:
        s = new_system(method, store=None)
        _vecs[method] = s.finetune(IDS, use_store=False)
    return _vecs[method]


def reference(method, remaining):
    key = (method, frozenset(remaining))
    if key not in _refs:
        _refs[key] = new_system(method).fit(sorted(remaining))
    return _refs[key]


def check(system, method, remaining, rnd):
    assert set(system.task_ids) == set(remaining)
    order = sorted(remaining)
    rnd.shuffle(order)
    scratch = MergeLedger.from_vectors([vectors(method)[t] for t in order], spec=SETTING.spec)
    assert system.ledger.digest() == scratch.digest()
    assert system.served_digest() == reference(method, remaining).served_digest()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_life_cycles_stay_exact(method):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def run(data):
        rnd = random.Random(data.draw(st.integers(0, 2**16), label="order seed"))
        initial = data.draw(st.lists(st.sampled_from(IDS), min_size=2, max_size=len(IDS), unique=True), label="fit")
        system = new_system(method).fit(initial)
        remaining = set(initial)
        check(system, method, remaining, rnd)
        ops = data.draw(st.lists(st.sampled_from(["unlearn", "serve", "saveload"]), min_size=1, max_size=5),
                        label="ops")
        with tempfile.TemporaryDirectory() as d:
            for op in ops:
                if op == "unlearn" and len(remaining) > 1:
                    forget = data.draw(st.lists(st.sampled_from(sorted(remaining)), min_size=1,
                                                max_size=len(remaining) - 1, unique=True), label="forget")
                    masks_before = dict(getattr(system.method, "masks", {})) if method == "sift" else {}
                    system.unlearn(forget)
                    remaining -= set(forget)
                    if method == "sift":  # SIFT: untouched masks never move; forgotten ones are gone
                        assert set(system.method.masks) == remaining
                        for t in remaining:
                            assert torch.equal(system.method.masks[t], masks_before[t]), t
                elif op == "serve":
                    t = data.draw(st.sampled_from(IDS), label="serve")
                    assert torch.equal(system.weights_for(t), reference(method, remaining).weights_for(t)), t
                elif op == "saveload":
                    saved = system.save(d)["digest"]
                    system = UnlearningSystem.load(d, SETTING)
                    assert system.served_digest() == saved
                check(system, method, remaining, rnd)
                STATS["steps"] += 1
        STATS["sequences"] += 1

    before = STATS["sequences"]
    run()
    assert STATS["sequences"] - before >= EXAMPLES // 2  # hypothesis really ran sequences


@pytest.mark.parametrize("method", ["merge", "local"])
def test_unlearning_every_task_gives_the_empty_merge(method):
    system = new_system(method).fit()
    system.unlearn(IDS[:2])
    system.unlearn(IDS[2:])
    assert len(system.ledger) == 0 and system.unlearned == IDS
    assert torch.count_nonzero(system.ledger.tau_bar()) == 0
    assert system.ledger.digest() == MergeLedger(SETTING.spec).digest()
    assert torch.equal(system.weights_for(IDS[0]), SETTING.theta0)


def _state(system):
    return system.served_digest(), system.ledger.digest(), list(system.unlearned)


@pytest.mark.parametrize("method", ["merge", "sift"])
def test_one_flipped_bit_in_a_retrained_vector_is_refused(method, monkeypatch):
    system = new_system(method, store=None).fit(IDS[:3])
    before = _state(system)
    real = parallel.finetune

    def flip(setting, task, *a, **k):
        tv = real(setting, task, *a, **k)
        bits = tv.values.clone().view(torch.int32)
        bits[7] ^= 1  # the lowest mantissa bit of one coordinate
        return TaskVector(tv.task_id, bits.view(torch.float32), tv.spec, tv.meta)

    monkeypatch.setattr(parallel, "finetune", flip)
    with pytest.raises(ExactnessError, match=r"digest mismatch"):
        system.unlearn([IDS[1]])
    assert _state(system) == before
    monkeypatch.undo()
    system.unlearn([IDS[1]])  # the honest retrain is accepted
    assert system.served_digest() == new_system(method).fit([IDS[0], IDS[2]]).served_digest()


def _fresh_setting():
    return SyntheticSetting(tasks=3)  # its own config, so the shared SETTING is never mutated


def test_changed_thread_count_is_refused_before_any_work():
    """The thread count is part of the environment fingerprint (on the CPU, 1 and 2 threads give
    other bits): unlearning refuses up front, naming the field, and retrains nothing."""
    setting = _fresh_setting()
    system = UnlearningSystem(setting, "merge").fit()
    before, spent = _state(system), system.unlearn_costs.gradient_steps
    setting.finetune_config = FinetuneConfig(**{**setting.finetune_config.to_json(), "threads": 2})
    with pytest.raises(ExactnessError, match="threads: merged with 1, here 2"):
        system.unlearn([setting.task_ids[0]])
    assert _state(system) == before and system.unlearn_costs.gradient_steps == spent


@pytest.mark.parametrize("change", [{"lr": 2e-2}, {"steps": 14}, {"optimizer": "sgd"}])
def test_changed_hyperparameter_is_refused(change):
    setting = _fresh_setting()
    system = UnlearningSystem(setting, "merge").fit()
    before = _state(system)
    setting.finetune_config = FinetuneConfig(**{**setting.finetune_config.to_json(), **change})
    with pytest.raises(ExactnessError, match="hyperparameters"):
        system.unlearn([setting.task_ids[1]])
    assert _state(system) == before


def test_report_how_much_was_tried():
    """Runs last in this file: prints the totals for the report (and checks they are real)."""
    print(f"\nproperty tests: {STATS['sequences']} random sequences, {STATS['steps']} checked steps")
    if STATS["sequences"]:
        assert STATS["steps"] >= STATS["sequences"]
