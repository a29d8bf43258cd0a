# Copyright (c) mmbinary contributors. All rights reserved.
"""The ``{-1, +1}`` encoding of quantized integers (Sun et al., AAAI 2019).

Signed (odd) codes
    An M-bit code is an odd integer ``q`` in ``{-(2^M-1), ..., -1, 1, ...,
    2^M-1}`` and ``q = sum_{m=1..M} 2^(m-1) * s_m`` with ``s_m`` in
    ``{-1, +1}``. The signs are the offset-binary bits of
    ``n = (q + 2^M - 1) / 2``: ``s_m = 2 * bit_(m-1)(n) - 1``.

Unsigned codes
    A K-bit unsigned code ``u`` in ``{0, ..., 2^K-1}`` is
    ``u = 1/2 * sum_{j=1..K} 2^(j-1) * s_j + (2^K - 1) / 2`` with
    ``s_j = 2 * bit_(j-1)(u) - 1``; ``u = 0`` is all signs -1.

Planes are stacked on a new leading axis, least significant first:
``planes[m - 1]`` holds ``s_m``.
"""
import torch
from torch import Tensor

from mmbinary.packed_format import MAX_BITS, MIN_BITS, check_bits, num_levels

__all__ = [
    'MIN_BITS', 'MAX_BITS', 'check_bits', 'num_levels', 'encode', 'decode',
    'encode_unsigned', 'decode_unsigned'
]


def _check_integer_tensor(x: Tensor, low: int, high: int, name: str,
                          odd: bool) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a Tensor, got {type(x).__name__}')
    if x.is_floating_point() or x.is_complex():
        if not torch.equal(x, torch.round(x)):
            raise ValueError(f'{name} must hold integers')
    elif x.dtype == torch.bool:
        raise ValueError(f'{name} must hold integers, got a bool tensor')
    x = x.to(torch.int64)
    if x.numel() and (x.min() < low or x.max() > high):
        raise ValueError(f'{name} must lie in [{low}, {high}], got values in '
                         f'[{int(x.min())}, {int(x.max())}]')
    if odd and x.numel() and bool(((x & 1) == 0).any()):
        raise ValueError(f'{name} must hold odd integers')
    return x


def _bit_planes(n: Tensor, bits: int, dtype: torch.dtype) -> Tensor:
    shifts = torch.arange(bits, device=n.device).view(-1, *([1] * n.dim()))
    bit = (n.unsqueeze(0) >> shifts) & 1
    return (2 * bit - 1).to(dtype)


def _check_planes(planes: Tensor) -> int:
    if not isinstance(planes, Tensor) or planes.dim() < 1:
        raise ValueError('planes must be a Tensor with a leading plane axis')
    bits = check_bits(planes.shape[0], 'planes.shape[0] (the bit width)')
    if not bool(((planes == 1) | (planes == -1)).all()):
        raise ValueError('planes must hold only -1 and +1')
    return bits


def encode(x_int: Tensor, bits: int, dtype=torch.float32) -> Tensor:
    """Split odd integer codes into ``bits`` sign planes.

    Args:
        x_int (Tensor): (*) odd integers in ``[-(2^bits-1), 2^bits-1]``.
        bits (int): the bit width M, 1..8.
        dtype: dtype of the planes.

    Returns:
        Tensor: (bits, *) planes of -1/+1, least significant first.
    """
    levels = num_levels(check_bits(bits))
    codes = _check_integer_tensor(x_int, -levels, levels, 'x_int', odd=True)
    return _bit_planes((codes + levels) // 2, bits, dtype)


def decode(planes: Tensor) -> Tensor:
    """Inverse of :func:`encode`: ``sum_m 2^(m-1) * s_m``.

    Args:
        planes (Tensor): (M, *) planes of -1/+1.

    Returns:
        Tensor: (*) int64 odd codes.
    """
    bits = _check_planes(planes)
    weights = (1 << torch.arange(bits, device=planes.device))
    weights = weights.view(-1, *([1] * (planes.dim() - 1)))
    return (planes.to(torch.int64) * weights).sum(0)


def encode_unsigned(u_int: Tensor, bits: int, dtype=torch.float32) -> Tensor:
    """Split unsigned codes ``0..2^bits-1`` into ``bits`` sign planes.

    Args:
        u_int (Tensor): (*) integers in ``[0, 2^bits-1]``.
        bits (int): the bit width K, 1..8.
        dtype: dtype of the planes.

    Returns:
        Tensor: (bits, *) planes of -1/+1, least significant first.
    """
    levels = num_levels(check_bits(bits))
    codes = _check_integer_tensor(u_int, 0, levels, 'u_int', odd=False)
    return _bit_planes(codes, bits, dtype)


def decode_unsigned(planes: Tensor) -> Tensor:
    """Inverse of :func:`encode_unsigned`:
    ``1/2 * sum_j 2^(j-1) * s_j + (2^K - 1) / 2``.

    Args:
        planes (Tensor): (K, *) planes of -1/+1.

    Returns:
        Tensor: (*) int64 codes in ``[0, 2^K-1]``.
    """
    bits = _check_planes(planes)
    return (decode(planes) + num_levels(bits)) // 2
