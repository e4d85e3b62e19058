"""SIFT-Masks: sign-fixed tuning, task-local masks, exact unlearning, the serving rule."""
import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from clamu_helpers.runtime.determinism import deterministic, generator
from clamu_helpers.core.errors import ClamuError, ExactnessError, StateError
from clamu_helpers.training.finetune import _optimizer, batches, finetune
from clamu_helpers.core.ledger import MergeLedger
from clamu_helpers.methods import get_method
from clamu_helpers.methods.sift import serve, sign_vector
from clamu_helpers.core.packing import packed_bytes
from clamu_helpers.unlearning.system import UnlearningSystem

PROJECTIONS = ("after_step", "before_step")


def _watch_sign(theta0, v):
    """A global optimizer pre-step hook recording, at every step, whether τ ⊙ v ≥ 0."""
    seen = []

    def hook(opt, args, kwargs):
        flat = torch.cat([p.detach().reshape(-1) for g in opt.param_groups for p in g["params"]])
        seen.append(bool(((flat - theta0) * v >= 0).all()))

    return seen, register_optimizer_step_pre_hook(hook)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_sign_constraint_holds_at_every_step(tiny, projection):
    v = sign_vector(tiny.spec.numel, 0)
    task = tiny.tasks[0]
    seen, handle = _watch_sign(tiny.theta0, v)
    try:
        tv = finetune(tiny, task, seed=0, sign=v, projection=projection)
        plain_seen = []
        handle.remove()
        plain_seen, handle = _watch_sign(tiny.theta0, v)
        finetune(tiny, task, seed=0)  # negative control: without the sign, the watch must fire
    finally:
        handle.remove()
    steps = tiny.finetune_config.steps
    assert len(seen) == steps and all(seen)
    assert not all(plain_seen[1:])
    assert bool((tv.values * v >= 0).all())
    mask = tv.values != 0
    assert torch.equal(mask, tv.values * v > 0)
    assert 0.2 < float(mask.float().mean()) < 0.8


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_sign_fixed_finetune_matches_independent_loop(tiny, projection):
    """Re-implement sign-fixed Adam on flat views; the bits must equal finetune()'s."""
    v = sign_vector(tiny.spec.numel, 3)
    task, cfg = tiny.tasks[2], tiny.finetune_config
    tv = finetune(tiny, task, seed=1, sign=v, projection=projection)
    import copy
    with deterministic(cfg.threads):
        model = copy.deepcopy(tiny.model)
        params = [dict(model.named_parameters())[n] for n in tiny.spec.names]
        vs = torch.split(v, tiny.spec.sizes)
        inits = [p.detach().clone() for p in params]
        opt = _optimizer(params, cfg)

        def project():
            with torch.no_grad():
                for p, p0, s in zip(params, inits, vs):
                    d = (p - p0).reshape(-1)
                    keep = (d * s) > 0
                    p.copy_(torch.where(keep, p.reshape(-1), p0.reshape(-1)).view_as(p))

        x, y = task.train
        for idx in batches(len(y), cfg.batch_size, cfg.steps, generator(1, "data-order", task.task_id)):
            opt.zero_grad(set_to_none=True)
            tiny.loss(model(x[idx]), y[idx]).backward()
            if projection == "before_step":
                project()
            opt.step()
            if projection == "after_step":
                project()
        project()
        mine = torch.cat([(p.detach() - p0).reshape(-1) for p, p0 in zip(params, inits)])
    assert torch.equal(mine, tv.values)


def test_modes_differ_and_bad_parameters(tiny):
    v = sign_vector(tiny.spec.numel, 0)
    a = finetune(tiny, tiny.tasks[0], sign=v, projection="after_step")
    b = finetune(tiny, tiny.tasks[0], sign=v, projection="before_step")
    assert a.digest != b.digest
    with pytest.raises(ClamuError):
        get_method("sift", scale="bogus")
    with pytest.raises(ClamuError):
        get_method("sift", scale=-1.0)
    with pytest.raises(ClamuError):
        get_method("sift", projection="sometimes")


def test_sign_vector_is_seeded_and_balanced():
    a, b, c = sign_vector(10_000, 0), sign_vector(10_000, 0), sign_vector(10_000, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((a > 0).float().mean()) - 0.5) < 0.03


def test_masks_are_independent_of_other_tasks(tiny):
    full = UnlearningSystem(tiny, "sift").fit()
    alone = UnlearningSystem(tiny, "sift").fit(["s03"])
    pair = UnlearningSystem(tiny, "sift").fit(["s03", "s05"])
    for other in (alone, pair):
        assert torch.equal(other.method.masks["s03"], full.method.masks["s03"])
        assert other.ledger.hashes["s03"] == full.ledger.hashes["s03"]
    direct = finetune(tiny, tiny.task("s03"), seed=0, sign=full.method.sign(full.context()))
    assert direct.digest == full.ledger.hashes["s03"]
    assert torch.equal(full.method.mask("s03"), direct.values != 0)


@pytest.mark.parametrize("scale,projection", [("count", "after_step"), ("1/T", "before_step")])
def test_unlearning_touches_no_other_mask_and_is_exact(tiny, scale, projection):
    system = UnlearningSystem(tiny, "sift", scale=scale, projection=projection).fit()
    before = {t: m.clone() for t, m in system.method.masks.items()}
    system.unlearn(["s02"])
    system.unlearn(["s06", "s00"])
    remaining = [t for t in tiny.task_ids if t not in ("s02", "s06", "s00")]
    assert sorted(system.method.masks) == remaining
    for t in remaining:
        assert torch.equal(system.method.masks[t], before[t])
    # the count vector is exactly Σ of the remaining masks
    recount = sum(system.method.mask(t).to(torch.int32) for t in remaining)
    assert torch.equal(system.method.count, recount)
    # ledger equals a from-scratch merge of independently finetuned remaining vectors
    v = sign_vector(tiny.spec.numel, 0)
    vecs = [finetune(tiny, tiny.task(t), seed=0, sign=v, projection=projection) for t in remaining]
    assert system.ledger.digest() == MergeLedger.from_vectors(vecs, tiny.spec).digest()
    scratch = UnlearningSystem(tiny, "sift", scale=scale, projection=projection).fit(remaining)
    assert system.served_digest() == scratch.served_digest()
    for t in ("s01", "s02"):
        assert torch.equal(system.weights_for(t), scratch.weights_for(t))
    # storage by hand: 4 bytes × d for the global model plus ⌈d/8⌉ bytes per remaining mask
    d = tiny.spec.numel
    assert system.storage_bytes() == 4 * d + len(remaining) * ((d + 7) // 8)


def test_serving_rule_hand_example():
    theta0 = torch.ones(4)
    # sign-consistent vectors (v = [+, ?, −, +]); every value dyadic
    taus = [torch.tensor([0.5, 0.0, -0.25, 0.0]), torch.tensor([0.25, 0.0, 0.0, 1.0]),
            torch.tensor([0.0, 0.0, -0.75, 0.5])]
    tau_bar = sum(taus)                      # [0.75, 0, -1.0, 1.5]
    count = torch.tensor([2, 0, 2, 2], dtype=torch.int32)
    m_a = taus[0] != 0                        # [1, 0, 1, 0]
    assert torch.equal(sum(t != 0 for t in taus).to(torch.int32), count)
    one_third = torch.tensor([1.25, 1.0, 1.0 - 1.0 / 3.0, 1.0])
    assert torch.allclose(serve(theta0, tau_bar, 3, m_a, count, "1/T"), one_third, atol=1e-7, rtol=0)
    assert torch.equal(serve(theta0, tau_bar, 3, m_a, count, "count"), torch.tensor([1.375, 1.0, 0.5, 1.0]))
    assert torch.equal(serve(theta0, tau_bar, 3, m_a, count, 2.0), torch.tensor([2.5, 1.0, -1.0, 1.0]))
    unmasked = torch.tensor([1.25, 1.0, 1.0 - 1.0 / 3.0, 1.5])
    for scale in ("1/T", "count", 2.0):
        assert torch.allclose(serve(theta0, tau_bar, 3, None, count, scale), unmasked, atol=1e-7, rtol=0)
    assert torch.equal(serve(theta0, tau_bar, 0, None), theta0)
    with pytest.raises(ClamuError):
        serve(theta0, tau_bar, 3, m_a, None, "count")


@pytest.mark.parametrize("scale", ["1/T", "count", 0.5])
def test_system_serving_against_numpy(tiny, scale):
    """weights_for of masked, unlearned and never-merged tasks against a NumPy float32 recomputation
    from independently finetuned vectors."""
    merged = ["s00", "s01", "s02", "s03", "s04"]
    system = UnlearningSystem(tiny, "sift", scale=scale).fit(merged)
    system.unlearn(["s04"])
    live = merged[:4]
    v = sign_vector(tiny.spec.numel, 0)
    masks = {t: (finetune(tiny, tiny.task(t), sign=v).values != 0).numpy() for t in live}
    count = np.sum([masks[t].astype(np.int64) for t in live], axis=0)
    tb = system.tau_bar.numpy()
    th0 = tiny.theta0.numpy()
    T = len(live)
    for t in live:
        m = masks[t]
        if scale == "1/T":
            delta = np.float32(1.0 / T) * tb
        elif scale == "count":
            delta = tb / np.maximum(count, 1).astype(np.float32)
        else:
            delta = np.float32(scale) * tb
        expected = th0 + np.where(m, delta, np.float32(0)).astype(np.float32)
        assert np.array_equal(system.weights_for(t).numpy(), expected), t
        assert system.method.group_of(system.context(), t) == t
    plain = th0 + np.float32(1.0 / T) * tb
    for t in ("s04", "s07"):  # unlearned, never merged: the plain merge
        assert np.array_equal(system.weights_for(t).numpy(), plain)
        assert system.method.group_of(system.context(), t) == "unmasked"


def test_sift_beats_plain_merge_on_tiny(tiny):
    merge = UnlearningSystem(tiny, "merge").fit().evaluate()["accuracy"].mean()
    sift = UnlearningSystem(tiny, "sift").fit().evaluate()["accuracy"].mean()
    count = UnlearningSystem(tiny, "sift", scale="count").fit().evaluate()["accuracy"].mean()
    assert sift > merge + 0.03 and count > merge + 0.03, (merge, sift, count)


def test_state_round_trip_and_corruption(tiny):
    system = UnlearningSystem(tiny, "sift", scale="count").fit(tiny.task_ids[:5])
    tensors, meta = system.method.state(system.context())
    assert meta["sign_sha256"] and len(meta["masked_tasks"]) == 5
    assert tensors["sift/mask/s00"].numel() == packed_bytes(tiny.spec.numel)
    fresh = UnlearningSystem(tiny, "sift", scale="count")
    fresh.ledger = system.ledger
    fresh.method.load_state(fresh.context(), tensors, meta)
    assert fresh.served_digest() == system.served_digest()
    assert torch.equal(fresh.weights_for("s01"), system.weights_for("s01"))
    bad_sign = dict(tensors)
    bad_sign["sift/sign"] = tensors["sift/sign"].clone()
    bad_sign["sift/sign"][0] ^= 1
    with pytest.raises(StateError):
        fresh.method.load_state(fresh.context(), bad_sign, meta)
    bad_count = dict(tensors)
    bad_count["sift/count"] = tensors["sift/count"] + 1
    with pytest.raises(StateError):
        fresh.method.load_state(fresh.context(), bad_count, meta)
    with pytest.raises(StateError):
        fresh.method.load_state(fresh.context(), tensors, {**meta, "sign_seed": 12345})
    missing = {k: t for k, t in tensors.items() if k != "sift/mask/s02"}
    with pytest.raises(StateError):
        fresh.method.load_state(fresh.context(), missing, meta)


def test_fit_refuses_vectors_that_are_not_sign_fixed(tiny):
    system = UnlearningSystem(tiny, "sift")
    plain = {t: finetune(tiny, tiny.task(t)) for t in tiny.task_ids[:2]}
    with pytest.raises(ExactnessError):
        system.method.fit(system.context(), plain)


def test_storage_breakdown(tiny):
    system = UnlearningSystem(tiny, "sift").fit()
    b = system.method.storage_breakdown(system.context())
    d = tiny.spec.numel
    assert b["global_model"] == 4 * d and b["masks_packed"] == 8 * ((d + 7) // 8)
    assert system.storage_bytes() == b["global_model"] + b["masks_packed"]
    dens = np.mean([float(system.method.mask(t).float().mean()) for t in tiny.task_ids])
    assert b["mask_density"] == pytest.approx(dens)
    assert b["never_moved"] == pytest.approx(float((system.method.count == 0).float().mean()))
    assert b["masks_compressed"] > 0 and b["bits_per_parameter_compressed"] > 0
