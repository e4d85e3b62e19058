import pytest
import torch
from torch import nn

from clamu_helpers import ParamSpec, ShapeMismatchError
from clamu_helpers.core.params import functional


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def test_flatten_unflatten_round_trip_is_exact():
    m = _model()
    spec = ParamSpec.from_model(m)
    vec = spec.flatten(m)
    assert vec.dtype == torch.float32 and vec.numel() == spec.numel == 5 * 4 + 4 + 4 * 3 + 3
    back = spec.unflatten(vec)
    for name, p in m.named_parameters():
        assert torch.equal(back[name], p.detach())
    assert torch.equal(spec.flatten(back), vec)


def test_load_into_and_functional_agree():
    m, other = _model(), _model()
    spec = ParamSpec.from_model(m)
    vec = torch.randn(spec.numel)
    spec.load_into(other, vec)
    assert torch.equal(spec.flatten(other), vec)
    x = torch.randn(7, 5)
    assert torch.equal(functional(m, spec, vec, x), other(x))
    # functional leaves the model's own parameters untouched
    assert not torch.equal(spec.flatten(m), vec)


def test_trainable_subset_by_names_and_predicate():
    m = _model()
    spec = ParamSpec.from_model(m, ["2.weight", "2.bias"])
    assert spec.names == ("2.weight", "2.bias") and spec.numel == 15
    assert ParamSpec.from_model(m, lambda n: n.startswith("2.")) == spec
    with pytest.raises(ShapeMismatchError, match="no parameters named"):
        ParamSpec.from_model(m, ["nope"])


def test_spec_mismatches_are_specific():
    m = _model()
    spec = ParamSpec.from_model(m)
    with pytest.raises(ShapeMismatchError, match="expected a flat vector"):
        spec.unflatten(torch.zeros(spec.numel + 1))
    wider = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(ShapeMismatchError, match="has shape"):
        spec.flatten(wider)
    assert spec.digest() != ParamSpec.from_model(wider).digest()
    assert ParamSpec.from_json(spec.to_json()) == spec
