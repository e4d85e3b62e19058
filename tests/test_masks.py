"""Mask formulas (TALL, EMR, ClAMU's straight-through update) against hand-computed examples
and independent reimplementations; packed storage."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clamu_helpers.core.errors import ShapeMismatchError
from clamu_helpers.localization.emr_merging import emr
from clamu_helpers.localization.masks import (LAMBDA_GRID, MaskConfig, choose_lambda, mask_from_scores, masked_weights,
                                 optimize_mask, pack_masks, ste_score_step, storage_bytes, tall_masks,
                                 unpack_masks)
from clamu_helpers.core.packing import packed_bytes
from clamu_helpers.core.params import ParamSpec


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


# -- TALL ---------------------------------------------------------------------------------------
def test_tall_hand_example():
    tau_t = torch.tensor([1.0, -2.0, 0.5, 0.0, -0.1, 0.0])
    tau_bar = torch.tensor([1.5, -1.0, 3.0, 1.0, -0.1, 0.0])
    # |τ̄ − τ_t| = [0.5, 1, 2.5, 1, 0, 0];  λ = 0.5 → thresholds [0.25, 0.5, 1.25, 0.5, 0, 0]
    assert tall_masks(tau_t, tau_bar, 0.5).tolist() == [True, True, False, False, True, False]
    # λ = 2.1 → thresholds [1.05, 2.1, 5.25, 2.1, 0, 0]: only the 5th survives (strict test, as
    # the original: a coordinate that no task moved, the 6th, is outside every mask)
    assert tall_masks(tau_t, tau_bar, 2.1).tolist() == [False, False, False, False, True, False]


def test_tall_matches_numpy_reimplementation_and_stacks():
    taus, tau_bar = _rand(4, 500, seed=1), _rand(500, seed=2) * 2
    lams = [0.2, 0.35, 0.5, 0.6]
    stacked = tall_masks(taus, tau_bar, torch.tensor(lams))
    for i, lam in enumerate(lams):
        t, b = taus[i].numpy(), tau_bar.numpy()
        expect = np.abs(t) > np.float32(lam) * np.abs(b - t)
        got = tall_masks(taus[i], tau_bar, lam)
        assert np.array_equal(got.numpy(), expect)
        assert torch.equal(stacked[i], got)
        assert 0 < int(got.sum()) < 500


def test_tall_bad_input():
    with pytest.raises(ShapeMismatchError):
        tall_masks(torch.zeros(3), torch.zeros(4), 0.3)
    with pytest.raises(ValueError):
        tall_masks(torch.zeros(3), torch.zeros(3), -0.1)


def test_choose_lambda_picks_best_first_on_ties_and_skips_nan():
    tau_t, tau_bar = _rand(300, seed=3), _rand(300, seed=4)
    dens = {lam: float(tall_masks(tau_t, tau_bar, lam).float().mean()) for lam in LAMBDA_GRID}
    # density falls with λ: a scorer rewarding density picks 0.2, one penalising it picks 0.6
    assert choose_lambda(tau_t, tau_bar, lambda m: float(m.float().mean())).lam == 0.2
    ch = choose_lambda(tau_t, tau_bar, lambda m: -float(m.float().mean()))
    assert ch.lam == 0.6 and torch.equal(ch.mask, tall_masks(tau_t, tau_bar, 0.6))
    assert ch.scores == {lam: -v for lam, v in dens.items()}
    # ties → first λ of the grid; NaN counts as −∞
    assert choose_lambda(tau_t, tau_bar, lambda m: 1.0, grid=[0.5, 0.3]).lam == 0.5
    target = float(tall_masks(tau_t, tau_bar, 0.4).float().mean())
    scorer = lambda m: float("nan") if abs(float(m.float().mean()) - dens[0.2]) < 1e-9 else -abs(float(m.float().mean()) - target)  # noqa: E731
    assert choose_lambda(tau_t, tau_bar, scorer).lam == 0.4


# -- EMR ----------------------------------------------------------------------------------------
def test_emr_hand_example():
    t1 = torch.tensor([1.0, -2.0, 0.0, 3.0])
    t2 = torch.tensor([-1.0, -1.0, 2.0, -4.0])
    # Σ = [0, -3, 2, -1] → ε = [-1, -1, 1, -1] (0 → −1)
    r = emr({"a": t1, "b": t2})
    assert r.epsilon.tolist() == [-1.0, -1.0, 1.0, -1.0]
    assert r.mask("a").tolist() == [False, True, False, False]
    assert r.mask("b").tolist() == [True, True, True, True]
    assert r.tau_uni.tolist() == [-1.0, -2.0, 2.0, -4.0]
    assert r.rescalers["a"] == pytest.approx(6.0 / 2.0)
    assert r.rescalers["b"] == pytest.approx(8.0 / 9.0)
    theta0 = torch.tensor([10.0, 20.0, 30.0, 40.0])
    assert r.weights(theta0, "a").tolist() == [10.0, 20.0 - 6.0, 30.0, 40.0]


def test_emr_per_tensor_rescalers_by_hand():
    """Two parameter tensors of different sizes (3 and 1): the original EMR code sums per-tensor
    means, λ_t = Σ_l mean|τ_t,l| / Σ_l mean|m_t,l ⊙ τ_uni,l|, which differs from Σ/Σ."""
    t1 = torch.tensor([1.0, -2.0, 0.0, 3.0])
    t2 = torch.tensor([-1.0, -1.0, 2.0, -4.0])
    # ε = [-1, -1, 1, -1]; τ_uni = [-1, -2, 2, -4]; m_a = [0, 1, 0, 0]; m_b = [1, 1, 1, 1]
    r = emr({"a": t1, "b": t2}, segments=[3, 1])
    # a: (mean(1, 2, 0) + mean(3)) / (mean(0, 2, 0) + mean(0)) = (1 + 3) / (2/3) = 6
    assert r.rescalers["a"] == pytest.approx((1.0 + 3.0) / (2.0 / 3.0))
    # b: (mean(1, 1, 2) + 4) / (mean(1, 2, 2) + 4) = (4/3 + 4) / (5/3 + 4) = 16/17
    assert r.rescalers["b"] == pytest.approx((4.0 / 3.0 + 4.0) / (5.0 / 3.0 + 4.0))
    g = emr({"a": t1, "b": t2}, segments=[3, 1], rescaler="global")
    assert g.rescalers["a"] == pytest.approx(6.0 / 2.0) and g.rescalers["b"] == pytest.approx(8.0 / 9.0)
    assert r.rescalers["b"] != pytest.approx(g.rescalers["b"])
    with pytest.raises(ShapeMismatchError):
        emr({"a": t1}, segments=[2, 1])
    with pytest.raises(ValueError, match="rescaler"):
        emr({"a": t1}, rescaler="layer")


def _emr_stacked(vs: np.ndarray):
    """Straightforward EMR on a (T, d) stack (float64)."""
    eps = np.where(vs.sum(0) > 0, 1.0, -1.0)
    m = vs * eps > 0
    tau_uni = eps * np.max(np.abs(vs) * m, axis=0)
    lam = np.abs(vs).sum(1) / np.array([np.abs(tau_uni[mi]).sum() for mi in m])
    return eps, m, tau_uni, lam


def test_emr_streaming_equals_stacked_reimplementation():
    vs = _rand(7, 1000, seed=5)
    vs[:, :50] = 0.0                     # Σ = 0 there: ε = −1, nobody agrees
    vs[0, 60:70] = 0.0
    eps, m, tau_uni, lam = _emr_stacked(vs.numpy().astype(np.float64))
    keys = [f"t{i}" for i in range(7)]
    by_map = emr(dict(zip(keys, vs)))
    by_stream = emr(lambda: iter(zip(keys, vs)))
    by_elect = emr(dict(zip(keys, vs)), elect=vs.sum(0))
    for r in (by_map, by_stream, by_elect):
        assert np.array_equal(r.epsilon.numpy(), eps.astype(np.float32))
        assert np.array_equal(r.tau_uni.numpy(), tau_uni.astype(np.float32))
        for i, k in enumerate(keys):
            assert np.array_equal(r.mask(k).numpy(), m[i])
            assert r.rescalers[k] == pytest.approx(lam[i], rel=1e-6)
    assert not by_map.mask("t3")[:50].any()


def test_emr_rejects_empty_input_and_mismatched_lengths():
    with pytest.raises(ValueError):
        emr({})
    with pytest.raises(ShapeMismatchError):
        emr({"a": torch.zeros(3), "b": torch.zeros(4)})


# -- ClAMU straight-through update --------------------------------------------------------------
def _linear_setting(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    spec = ParamSpec.from_model(model)
    return SimpleNamespace(model=model, spec=spec, theta0=spec.flatten(model).clone(),
                           loss=lambda out, y: F.cross_entropy(out, y),
                           batch_loss=lambda forward, x, y: F.cross_entropy(forward(x), y))


def _grad_by_hand(theta, x, y):
    """∂L/∂M for softmax regression (weight (2,3) then bias (2,)), mean cross-entropy."""
    w, b = theta[:6].view(2, 3), theta[6:]
    p = torch.softmax(x @ w.T + b, dim=1)
    g = (p - F.one_hot(y, 2).float()) / len(y)
    return torch.cat([(g.T @ x).reshape(-1), g.sum(0)])


@pytest.mark.parametrize("update", ["draft", "normalized"])
def test_ste_update_matches_the_drafts_closed_form(update):
    st = _linear_setting()
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    tau_bar = torch.randn(8, generator=g)
    alpha, lr = 0.7, 30.0
    cfg = lambda steps: MaskConfig(steps=steps, lr=lr, alpha=alpha, update=update)  # noqa: E731
    s = torch.zeros(8)
    for step in (1, 2, 3):
        m = s > 0
        theta = st.theta0 + alpha * m.float() * tau_bar
        grad = _grad_by_hand(theta, x, y)
        upd = grad * torch.sigmoid(s) * (1 - torch.sigmoid(s)) * alpha * tau_bar
        if update == "normalized":
            upd = upd / upd.abs().mean()
        s = s - lr * upd
        m_opt, s_opt = optimize_mask(st, tau_bar, (x, y), cfg(step))
        assert torch.allclose(s_opt, s, rtol=1e-5, atol=1e-6), step
        assert torch.equal(m_opt, s > 0)
    assert 0 < int(m_opt.sum()) < 8         # the mask moved in both directions
    # the helper alone, with ∂L/∂M from autograd
    w = st.theta0.clone().requires_grad_(True)
    loss = F.cross_entropy(torch.func.functional_call(st.model, st.spec.unflatten(w), (x,)), y)
    (ga,) = torch.autograd.grad(loss, w)
    assert torch.allclose(ga, _grad_by_hand(st.theta0, x, y), atol=1e-6)
    s1 = ste_score_step(torch.zeros(8), ga, tau_bar, lr, alpha, update="draft")
    assert torch.allclose(s1, -lr * ga * 0.25 * alpha * tau_bar, atol=1e-6)


def test_drafts_raw_step_moves_the_mask_where_float32_sigmoid_would_not():
    """With the draft's raw rule a first step is tiny (|η g σ'(0) α τ̄| ~ 1e-9 here): the mask is
    1{s > 0} and follows it; σ(s) > 0.5 in float32 would leave the mask empty."""
    st = _linear_setting()
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    tau_bar = torch.randn(8, generator=g) * 1e-6
    m, s = optimize_mask(st, tau_bar, (x, y), MaskConfig(steps=1, lr=1e-2, alpha=1.0, update="draft"))
    assert 0 < float(s.abs().max()) < 1e-7
    assert int(m.sum()) > 0 and not bool((torch.sigmoid(s) > 0.5).any())


def test_mask_config_names_the_bad_parameter():
    with pytest.raises(ValueError, match="mask_steps"):
        MaskConfig(steps=0)
    with pytest.raises(ValueError, match="mask_lr"):
        MaskConfig(lr=-1.0)
    with pytest.raises(ValueError, match="mask_batch_size"):
        MaskConfig(batch_size=0)
    with pytest.raises(ValueError, match="update"):
        MaskConfig(update="adam")


def test_mask_from_scores_is_s_greater_than_zero():
    s = torch.tensor([0.0, 1e-9, 1e-6, -1e-9, -1e-6, 3.0])
    # s = 1e-9 is in the mask (σ(1e-9) rounds to 0.5 in float32, which made it look outside)
    assert mask_from_scores(s).tolist() == [False, True, True, False, False, True]


def test_minibatch_mask_optimization_is_deterministic_and_needs_a_generator():
    st = _linear_setting(1)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g)
    tau_bar = torch.randn(8, generator=g)
    cfg = MaskConfig(steps=6, lr=0.1, batch_size=8)
    a = optimize_mask(st, tau_bar, (x, y), cfg, torch.Generator().manual_seed(11))[1]
    b = optimize_mask(st, tau_bar, (x, y), cfg, torch.Generator().manual_seed(11))[1]
    c = optimize_mask(st, tau_bar, (x, y), cfg, torch.Generator().manual_seed(12))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError):
        optimize_mask(st, tau_bar, (x, y), cfg)
    with pytest.raises(ShapeMismatchError):
        optimize_mask(st, torch.zeros(5), (x, y), cfg, torch.Generator())


def _reference_mask_loop(st, tau_bar, data, cfg, g):
    """The optimisation as first written (three passes per step to build M0 + α m ⊙ τ̄, the
    loss of the whole model output): the bits the one-pass kernel must keep."""
    from clamu_helpers.training.finetune import batches
    x, y = data
    s = torch.zeros(st.spec.numel)
    alpha_tau = cfg.alpha * tau_bar
    it = batches(len(y), cfg.batch_size, cfg.steps, g)
    for _ in range(cfg.steps):
        idx = next(it)
        w = masked_weights(st.theta0, s > 0, tau_bar, cfg.alpha).requires_grad_(True)
        loss = st.loss(torch.func.functional_call(st.model, st.spec.unflatten(w), (x[idx],)), y[idx])
        (grad,) = torch.autograd.grad(loss, w)
        s = ste_score_step(s, grad, tau_bar, cfg.lr, cfg.alpha, cfg.update, None, alpha_tau)
    return s > 0, s


@pytest.mark.parametrize("update", ["draft", "normalized"])
def test_one_pass_masked_weights_keep_the_bits_of_the_three_pass_loop(update):
    st = _linear_setting(2)
    with torch.no_grad():                      # −0.0 in θ0: θ0 + 0 must still be what is served
        st.model.bias[0] = -0.0
    st.theta0 = st.spec.flatten(st.model).clone()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    tau_bar = torch.randn(8, generator=g)
    cfg = MaskConfig(steps=9, lr=3.0, batch_size=7, alpha=0.3, update=update)
    m_ref, s_ref = _reference_mask_loop(st, tau_bar, (x, y), cfg, torch.Generator().manual_seed(4))
    m, s = optimize_mask(st, tau_bar, (x, y), cfg, torch.Generator().manual_seed(4))
    assert torch.equal(s, s_ref) and torch.equal(m, m_ref)


def test_a_mask_run_advanced_in_pieces_equals_one_run(smoke_images):
    from clamu_helpers.localization.masks import MaskRun
    s = smoke_images
    task = s.tasks[0]
    tau = 1e-2 * torch.randn(s.spec.numel, generator=torch.Generator().manual_seed(0))
    cfg = MaskConfig(steps=12, lr=100.0, batch_size=8, alpha=0.5)
    whole = MaskRun(s, tau, task.train, cfg, torch.Generator().manual_seed(1)).advance(12)
    parts = MaskRun(s, tau, task.train, cfg, torch.Generator().manual_seed(1))
    for n in (2, 1, 4, 5, 9):                  # the last piece stops at config.steps
        parts.advance(n)
    assert parts.done == 12 and torch.equal(parts.scores, whole.scores) and torch.equal(parts.mask, whole.mask)
    m_ref, s_ref = _reference_mask_loop(s, tau, task.train, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(whole.scores, s_ref)   # and the real setting keeps the reference bits


# -- serving and storage ------------------------------------------------------------------------
def test_masked_weights_and_errors():
    theta0, vec = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])
    m = torch.tensor([True, False, True])
    assert masked_weights(theta0, m, vec, 0.5).tolist() == [6.0, 2.0, 18.0]
    with pytest.raises(ShapeMismatchError):
        masked_weights(theta0, torch.tensor([True, False]), vec)


def test_packed_masks_round_trip_and_storage():
    ms = [(_rand(1003, seed=i) > 0.3) for i in range(5)]
    packed = pack_masks(ms)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (5, packed_bytes(1003)) == (5, 126)
    for a, b in zip(ms, unpack_masks(packed, 1003)):
        assert torch.equal(a, b)
    # one float32 model + 3 masks at 1 bit/param + 3 scalars
    assert storage_bytes(1003, models=1, masks=3, scalars=3) == 4 * 1003 + 3 * 126 + 12
    with pytest.raises(ValueError):
        storage_bytes(10, masks=-1)


def test_a_bf16_mask_run_is_deterministic_resumable_and_not_float32(smoke_images):
    """precision="bf16" (the cpu profile's text and author masks where bf16 is native): same
    bits twice and in pieces, other bits than float32, scores still float32."""
    from clamu_helpers.localization.masks import MaskRun
    s = smoke_images
    task = s.tasks[0]
    tau = 1e-2 * torch.randn(s.spec.numel, generator=torch.Generator().manual_seed(0))
    runs = {}
    for precision in ("float32", "bf16"):
        cfg = MaskConfig(steps=10, lr=100.0, batch_size=8, alpha=0.5, precision=precision)
        whole = MaskRun(s, tau, task.train, cfg, torch.Generator().manual_seed(1)).advance(10)
        parts = MaskRun(s, tau, task.train, cfg, torch.Generator().manual_seed(1)).advance(3).advance(7)
        assert whole.scores.dtype == torch.float32 and torch.equal(parts.scores, whole.scores)
        runs[precision] = whole.scores
    assert not torch.equal(runs["float32"], runs["bf16"])
    with pytest.raises(ValueError, match="precision must be one of"):
        MaskConfig(precision="fp16")
