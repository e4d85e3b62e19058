import pytest
import torch

from clamu_helpers.core.merging import ties_merge, trim_top_k


def test_trim_keeps_top_fraction_by_magnitude():
    x = torch.tensor([[0.1, -0.9, 0.3, 0.5], [2.0, 0.0, -3.0, 1.0]])
    assert torch.equal(trim_top_k(x, 0.5), torch.tensor([[0.0, -0.9, 0.0, 0.5], [2.0, 0.0, -3.0, 0.0]]))


def test_ties_hand_example():
    # three task vectors over 4 coordinates; k = 0.5 keeps the 2 largest entries of each
    t1 = torch.tensor([0.5, -0.1, 0.4, 0.0])    # trimmed: [0.5, 0, 0.4, 0]
    t2 = torch.tensor([-0.2, 0.3, 0.1, -0.6])   # trimmed: [0, 0.3, 0, -0.6]
    t3 = torch.tensor([-0.9, 0.05, 0.2, 0.1])   # trimmed: [-0.9, 0, 0.2, 0]
    # elected signs from the trimmed sums [-0.4, 0.3, 0.6, -0.6]: [-, +, +, -]
    # disjoint means: c0: only t3 agrees → -0.9; c1: t2 → 0.3; c2: t1, t3 → 0.3; c3: t2 → -0.6
    out = ties_merge([t1, t2, t3], k=0.5)
    assert torch.allclose(out, torch.tensor([-0.9, 0.3, 0.3, -0.6]))
    assert torch.equal(ties_merge({"a": t1, "b": t2, "c": t3}, k=0.5), out)      # a mapping: same bits
    assert torch.equal(ties_merge(lambda: iter([("a", t1), ("b", t2), ("c", t3)]), k=0.5), out)


def test_errors():
    with pytest.raises(ValueError, match="at least one"):
        ties_merge([])
    with pytest.raises(ValueError, match="differ in shape"):
        ties_merge([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError, match="k must be"):
        ties_merge([torch.zeros(2)], k=0)
