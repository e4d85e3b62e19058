import pytest
import torch

from clamu_helpers.core.packing import bits_per_parameter, compress, decompress, pack, packed_bytes, unpack


@pytest.mark.parametrize("d", [1, 7, 8, 9, 1000, 4099])
def test_pack_round_trip_exact(d):
    m = torch.rand(d, generator=torch.Generator().manual_seed(d)) < 0.3
    p = pack(m)
    assert p.dtype == torch.uint8 and p.numel() == packed_bytes(d) == (d + 7) // 8
    assert torch.equal(unpack(p, d), m)
    assert torch.equal(decompress(compress(m), d), m)


def test_bit_order_by_hand():
    m = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 1], dtype=torch.bool)
    assert pack(m).tolist() == [1, 1]  # little bit order: bit i of byte i // 8


def test_compression_never_costs_more_than_packing_and_wins_when_sparse():
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(80_000, generator=g) < 0.5
    sparse = torch.rand(80_000, generator=g) < 0.01
    assert bits_per_parameter(dense, compressed=True) <= 1.0 + 8 / 80_000
    assert bits_per_parameter(sparse, compressed=True) < 0.2
    assert bits_per_parameter(dense) == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="expected 2 uint8"):
        unpack(torch.zeros(3, dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match="header"):
        decompress(b"\x07abc", 8)
