import pytest
import torch

from clamu_helpers.merging import MERGE_METHODS, merge_average, merge_sum, task_arithmetic, ties, trim_top_k


def test_sum_average_task_arithmetic_by_hand():
    a, b = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 2.0, -0.5])
    assert torch.equal(merge_sum([a, b]), torch.tensor([4.0, 0.0, 0.0]))
    assert torch.equal(merge_average([a, b]), torch.tensor([2.0, 0.0, 0.0]))
    assert torch.equal(task_arithmetic([a, b], 0.5), torch.tensor([2.0, 0.0, 0.0]))


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
    out = ties([t1, t2, t3], k=0.5, lam=1.0)
    assert torch.allclose(out, torch.tensor([-0.9, 0.3, 0.3, -0.6]))
    assert torch.allclose(ties([t1, t2, t3], k=0.5, lam=2.0), 2 * out)


def test_registry_and_errors():
    assert set(MERGE_METHODS) == {"sum", "average", "task_arithmetic", "ties"}
    with pytest.raises(ValueError, match="at least one"):
        merge_sum([])
    with pytest.raises(ValueError, match="differ in shape"):
        merge_sum([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError, match="k must be"):
        ties([torch.zeros(2)], k=0)
