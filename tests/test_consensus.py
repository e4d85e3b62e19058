"""Consensus merging (``methods/consensus.py``): the mask, the validation choice, exact unlearning."""
from __future__ import annotations

import itertools

import pytest
import torch

from clamu_helpers import UnlearningSystem
from clamu_helpers.localization.masks import masked_weights, tall_masks
from clamu_helpers.methods import get_method
from clamu_helpers.localization.selection import scale_grid
from clamu_helpers.settings import SyntheticSetting


@pytest.fixture(scope="module")
def blobs():
    return SyntheticSetting(tasks=6)


def _agreement(system, lam):
    vectors = system.finetune(system.task_ids)
    return sum(tall_masks(vectors[t].values, system.tau_bar, lam).to(torch.int32) for t in system.task_ids)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_the_mask_keeps_coordinates_where_k_tall_masks_agree(blobs, k):
    s = UnlearningSystem(blobs, "consensus", k=k, alpha=1.0).fit()
    mask = _agreement(s, 0.4) >= k
    assert 0 < int(mask.sum()) < mask.numel()
    assert torch.equal(s.weights_for("s03"), blobs.theta0 + torch.where(mask, s.tau_bar, torch.zeros(())))
    assert s.weights_for("s03").equal(s.weights_for("s00"))       # one model for every task
    assert s.mask_density() == pytest.approx(float(mask.float().mean()))


def test_more_agreement_keeps_fewer_coordinates(blobs):
    dens = [UnlearningSystem(blobs, "consensus", k=k, alpha=1.0).fit().mask_density() for k in (1, 2, 3, 6)]
    assert dens == sorted(dens, reverse=True) and dens[0] > dens[-1]


def test_k_and_alpha_are_chosen_on_validation_data(blobs):
    s = UnlearningSystem(blobs, "consensus").fit()
    count, ids = _agreement(s, 0.4), s.task_ids
    scores = {(k, a): blobs.mean_score(masked_weights(blobs.theta0, count >= k, s.tau_bar, a), ids, "val")
              for k, a in itertools.product((1, 2, 3), scale_grid(len(ids)))}
    best = max(scores, key=lambda ka: scores[ka])   # first maximum, as the grid is ordered
    assert s.served_params() == {"k": best[0], "alpha": best[1]}
    assert len(set(scores.values())) > 1   # the grid matters here: a wrong choice would show


@pytest.mark.parametrize("vectors", ["retrain", "keep"])
def test_unlearning_equals_a_merge_that_never_saw_the_task(blobs, vectors):
    s = UnlearningSystem(blobs, "consensus", vectors=vectors).fit()
    s.unlearn(["s02"])
    fresh = UnlearningSystem(blobs, "consensus", vectors=vectors).fit([t for t in blobs.task_ids if t != "s02"])
    assert s.served_digest() == fresh.served_digest()
    E = blobs.finetune_config.steps
    assert s.unlearn_costs.counts() == s.method.unlearning_cost(6, 1, E).counts()
    # τ_u, and without kept vectors the 5 others in a second round (the mask needs them all)
    assert s.unlearn_costs.finetunes == (6 if vectors == "retrain" else 1)
    assert s.unlearn_costs.parallel_steps == (2 * E if vectors == "retrain" else E)


def test_storage_is_one_model_and_one_bit_per_parameter(blobs):
    d = blobs.spec.numel
    assert UnlearningSystem(blobs, "consensus").fit().storage_bytes() == 4 * d + (d + 7) // 8
    kept = UnlearningSystem(blobs, "consensus", vectors="keep").fit()
    assert kept.storage_bytes() == 4 * d + (d + 7) // 8 + 4 * d * 6


@pytest.mark.parametrize("bad, name", [({"k": 0}, "k"), ({"k": 1.5}, "k"), ({"alpha": -1}, "alpha"),
                                       ({"lam": float("nan")}, "lam"), ({"ks": []}, "ks"),
                                       ({"vectors": "cache"}, "vectors")])
def test_bad_parameters_name_themselves(bad, name):
    with pytest.raises(ValueError, match=name):
        get_method("consensus", **bad)
