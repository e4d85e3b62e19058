"""Masks stored as bits: 1 bit per parameter packed, or compressed where sparse.

``pack(m)`` → uint8 tensor of ⌈d/8⌉ bytes; ``unpack(packed, d)`` round-trips exactly.
``compress(m)`` stores the packed bits with zlib (level 9) when that is smaller, else the
packed bits themselves (a one-byte header says which), so it costs at most 1 bit per
parameter (plus one byte) and well under 1 when the mask is sparse or structured;
``bits_per_parameter`` reports either.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def pack(mask: torch.Tensor) -> torch.Tensor:
    """A boolean (or 0/1) flat mask as packed bits (uint8, little bit order)."""
    m = mask.detach().reshape(-1).to(torch.bool).cpu().numpy()
    return torch.from_numpy(np.packbits(m, bitorder="little"))


def unpack(packed: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`pack`: a bool tensor of length ``d``."""
    if packed.dtype != torch.uint8 or packed.numel() != (d + 7) // 8:
        raise ValueError(f"packed mask has {packed.numel()} bytes of {packed.dtype}; expected {(d + 7) // 8} uint8")
    bits = np.unpackbits(packed.cpu().numpy(), count=d, bitorder="little")
    return torch.from_numpy(bits.astype(bool))


def pack_into(out: np.ndarray, off: int, bits: torch.Tensor) -> None:
    """Pack the bool chunk ``bits`` (starting at flat offset ``off``, a multiple of 8) into the
    packed mask ``out`` (uint8, ⌈d/8⌉ bytes) in place: how masks are built chunk by chunk."""
    packed = np.packbits(bits.detach().reshape(-1).to(torch.bool).cpu().numpy(), bitorder="little")
    out[off // 8: off // 8 + packed.size] = packed


_RAW, _ZLIB = b"\x00", b"\x01"


def compress(mask: torch.Tensor) -> bytes:
    """Packed bits, zlib-compressed where that is smaller (dense random masks are not)."""
    raw = pack(mask).numpy().tobytes()
    z = zlib.compress(raw, 9)
    return _ZLIB + z if len(z) < len(raw) else _RAW + raw


def decompress(blob: bytes, d: int) -> torch.Tensor:
    head, body = blob[:1], blob[1:]
    if head not in (_RAW, _ZLIB):
        raise ValueError("not a compressed mask (unknown header byte)")
    raw = zlib.decompress(body) if head == _ZLIB else body
    return unpack(torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()), d)


def packed_bytes(d: int) -> int:
    """Storage of one packed mask over d parameters: ⌈d/8⌉ bytes."""
    return (int(d) + 7) // 8


def bits_per_parameter(mask: torch.Tensor, compressed: bool = False) -> float:
    d = mask.numel()
    n = len(compress(mask)) if compressed else packed_bytes(d)
    return 8.0 * n / d
