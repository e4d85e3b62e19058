"""Declared parameters: a method that declares its parameters (constraint, sentinels, grid)
gets validation, the validation search, the refresh after unlearning, its saved state and the
exact audit with no other code; every method's declarations are consistent."""
import itertools
from dataclasses import dataclass

import pytest

from clamu_helpers.unlearning.audit import audit
from clamu_helpers.core.errors import ParameterError, StateError
from clamu_helpers.methods import METHODS, Method, Params, get_method, register
from clamu_helpers.methods.declared import (ONE_OVER_T, SCALE_GRID, VAL, Grid, Real, canonical, declared,
                                            default_of, param)
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.unlearning.system import UnlearningSystem


class PoweredMerge(Method):
    """A test method, declared in ~20 lines: serves M0 + α^p τ̄, α and p chosen on validation."""

    reference = "tests: a method made of declarations"
    scale_param = "alpha"

    @dataclass
    class Params(Params):
        alpha: float | str = param(VAL, Real(), sentinels=(VAL, ONE_OVER_T), grid=SCALE_GRID)
        power: float | str = param(VAL, Real(cast=True), sentinels=(VAL,), grid="powers")
        powers: list = param([1.0, 0.5], Grid())

    def weights_for(self, ctx, task_id):
        n = len(ctx.ledger)
        if not n:
            return ctx.setting.theta0
        return ctx.setting.theta0 + self.resolve("alpha", n) ** self.resolve("power", n) * ctx.tau_bar


@pytest.fixture
def powered():
    register("test-powered-merge")(PoweredMerge)
    yield "test-powered-merge"
    METHODS.pop("test-powered-merge")


@pytest.fixture(scope="module")
def blobs():
    return SyntheticSetting(tasks=6)


def brute_force(setting, ids, powers):
    """The best (α, p) over the declared grids, by the test's own loop."""
    from clamu_helpers.core.ledger import MergeLedger
    from clamu_helpers.training.finetune import finetune
    led = MergeLedger(setting.spec)
    for t in ids:
        led.add(t, finetune(setting, setting.task(t)))
    tau_bar = led.tau_bar()
    grid = list(itertools.product(SCALE_GRID(len(ids)), powers))
    scores = [setting.mean_score(setting.theta0 + a ** p * tau_bar, ids, "val") for a, p in grid]
    return grid[max(range(len(grid)), key=lambda i: (scores[i], -i))]


def test_a_declared_method_gets_search_refresh_state_and_audit(powered, blobs, tmp_path):
    system = UnlearningSystem(blobs, powered, seed=0).fit()
    best = brute_force(blobs, blobs.task_ids, [1.0, 0.5])
    assert (system.method.chosen["alpha"], system.method.chosen["power"]) == best
    # what tables record: the served scale and every searchable parameter, as numbers
    assert system.method.served_params(system.context()) == {"alpha": best[0], "power": best[1]}
    # the refresh searches again on the remaining tasks only
    system.unlearn(["s01", "s04"])
    remaining = [t for t in blobs.task_ids if t not in ("s01", "s04")]
    assert (system.method.chosen["alpha"], system.method.chosen["power"]) == brute_force(blobs, remaining, [1.0, 0.5])
    # saved and loaded with its choices; a state without them is refused
    system.save(tmp_path / "s")
    assert UnlearningSystem.load(tmp_path / "s", blobs).served_digest() == system.served_digest()
    m = get_method(powered)
    ctx = system.context()
    with pytest.raises(StateError, match="lacks the alpha chosen on validation data"):
        m.load_state(ctx, {}, {})
    # the exact audit holds with no method code for it
    assert audit(blobs, powered, unlearn=2, seed=1)["exact"]
    # a fixed value is served as given and searched no more
    fixed = UnlearningSystem(blobs, powered, seed=0, alpha=ONE_OVER_T, power=2).fit()
    assert fixed.method.chosen == {} and fixed.method.searched() == []
    assert fixed.method.resolve("alpha", 6) == pytest.approx(1 / 6) and fixed.method.params["power"] == 2.0


@pytest.mark.parametrize("kw, message", [
    ({"alpha": 0}, "alpha must be a positive number, 'val' .* or '1/T'"),
    ({"power": "mean"}, "power must be a positive number or 'val'"),
    ({"powers": []}, "powers must be a non-empty list of finite positive numbers"),
    ({"powers": [1, -2]}, "powers must be a non-empty list"),
])
def test_declared_constraints_refuse_bad_values_by_name(powered, kw, message):
    with pytest.raises(ParameterError, match=message):
        get_method(powered, **kw)


def test_every_method_declares_every_parameter_and_a_grid_for_each_val():
    for name, cls in METHODS.items():
        decl = declared(cls.Params)
        assert set(decl) == set(cls.Params.names()), f"{name}: undeclared {set(cls.Params.names()) - set(decl)}"
        for pname, d in decl.items():
            default = default_of(cls.Params, pname)
            assert d.check(default, pname) == default, (name, pname)   # the default passes its own declaration
            if VAL in d.sentinels:
                assert d.grid is not None, f"{name}.{pname} can be 'val' but declares no grid"
        if cls.scale_param:
            assert cls.scale_param in decl, name


def test_mean_is_the_older_spelling_of_one_over_t(blobs):
    assert canonical("mean") == ONE_OVER_T
    a = UnlearningSystem(blobs, "merge", seed=0, alpha="mean").fit(blobs.task_ids[:4])
    b = UnlearningSystem(blobs, "merge", seed=0, alpha="1/T").fit(blobs.task_ids[:4])
    assert a.weights_for("s00").equal(b.weights_for("s00"))
    assert a.method.params == {"alpha": "mean"}   # kept as written: the digests of saved systems stay
