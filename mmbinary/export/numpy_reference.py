# Copyright (c) mmbinary contributors. All rights reserved.
"""A bit-exact NumPy reference of the packed MBB convolution, in integer
arithmetic only: AND and popcount on the packed 64-bit words, then the exact
integer accumulator (``docs/packed_format.md``). It defines every bit for a
hardware implementation and needs neither PyTorch nor the extension.

Per output ``(n, o, y, x)``, over the valid (non-padded) taps ``(i, j)``::

    S_wa = sum_{m,k} 2^(m+k) popcount(W[o, m, i, j] & A[n, y', x', g, k])
    S_a  = sum_k 2^k popcount(A[n, y', x', g, k])
    sum w*q = 2 * S_wa - (2^M - 1) * S_a
    unsigned: acc += sum w*q
    signed:   acc += 2 * sum w*q - L * (sum of w over the tap's channels)

with ``sum of w = 2 * sum_m 2^m popcount(W[o, m, i, j]) - (2^M - 1) * Cg``.
"""
from typing import Sequence, Tuple, Union

import numpy as np

IntPair = Union[int, Sequence[int]]


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(
        value)
    if len(pair) != 2:
        raise ValueError(f'{name} must be an int or a pair, got {value!r}')
    return int(pair[0]), int(pair[1])


def _popcount(words: np.ndarray) -> np.ndarray:
    return np.bitwise_count(words).astype(np.int64)


def mbb_conv2d_accumulate_numpy(act_words: np.ndarray,
                                weight_words: np.ndarray, *,
                                in_channels: int, w_bits: int, a_bits: int,
                                signed: bool, stride: IntPair = 1,
                                padding: IntPair = 0, dilation: IntPair = 1,
                                groups: int = 1) -> np.ndarray:
    """Integer accumulators of the packed MBB convolution.

    Args:
        act_words (np.ndarray): (N, H, W, groups, K, Wg) 64-bit words (int64
            or uint64), from ``mmbinary.ops.quantize_pack``.
        weight_words (np.ndarray): (O, M, kh, kw, Wg) 64-bit words, from
            ``mmbinary.ops.pack_weight_codes``.
        in_channels (int): C, all groups.
        w_bits (int): M; a_bits (int): K.
        signed (bool): the activation mode.
        stride, padding, dilation (int | pair): as a 2-D convolution.
        groups (int): convolution groups.

    Returns:
        np.ndarray: (N, O, Ho, Wo) int32 accumulators.
    """
    act = np.ascontiguousarray(act_words).view(np.uint64)
    weight = np.ascontiguousarray(weight_words).view(np.uint64)
    if act.ndim != 6 or weight.ndim != 5:
        raise ValueError('act_words must be (N, H, W, groups, K, Wg) and '
                         'weight_words (O, M, kh, kw, Wg), got shapes '
                         f'{act.shape} and {weight.shape}')
    batch, height, width, act_groups, k_planes, words = act.shape
    out_channels, m_planes, kh, kw, weight_words_per_group = weight.shape
    if (act_groups, k_planes, m_planes) != (groups, a_bits, w_bits) or \
            words != weight_words_per_group:
        raise ValueError(
            'act_words / weight_words do not match groups, a_bits, w_bits: '
            f'{act.shape}, {weight.shape}, groups={groups}, '
            f'a_bits={a_bits}, w_bits={w_bits}')
    (sh, sw), (ph, pw), (dh, dw) = (_pair(stride, 'stride'),
                                    _pair(padding, 'padding'),
                                    _pair(dilation, 'dilation'))
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_group_in, per_group_out = in_channels // groups, out_channels // groups
    w_max, levels = (1 << w_bits) - 1, (1 << a_bits) - 1
    w_powers = 1 << np.arange(w_bits, dtype=np.int64)
    a_powers = 1 << np.arange(a_bits, dtype=np.int64)
    pair_powers = w_powers[:, None] * a_powers[None, :]  # (M, K)
    acc = np.zeros((batch, out_h, out_w, out_channels), dtype=np.int64)
    rows = np.arange(out_h) * sh - ph
    cols = np.arange(out_w) * sw - pw
    for i in range(kh):
        y = rows + i * dh
        valid_y = (y >= 0) & (y < height)
        for j in range(kw):
            x = cols + j * dw
            valid_x = (x >= 0) & (x < width)
            valid = valid_y[:, None] & valid_x[None, :]  # (Ho, Wo)
            # Words of this tap for every output; padded taps read nothing.
            tap = act[:, y.clip(0, height - 1)][:, :, x.clip(0, width - 1)]
            tap = np.where(valid[None, :, :, None, None, None], tap,
                           np.uint64(0))  # (N, Ho, Wo, G, K, Wg)
            for g in range(groups):
                a = tap[:, :, :, g]  # (N, Ho, Wo, K, Wg)
                w = weight[g * per_group_out:(g + 1) * per_group_out, :, i,
                           j]  # (Og, M, Wg)
                both = a[:, :, :, None, None, :, :] & w[None, None, None, :,
                                                        :, None, :]
                s_wa = (_popcount(both).sum(-1) * pair_powers).sum((-2, -1))
                s_a = (_popcount(a).sum(-1) * a_powers).sum(-1)
                sum_wq = 2 * s_wa - w_max * s_a[..., None]  # (N,Ho,Wo,Og)
                if signed:
                    w_sum = 2 * (_popcount(w).sum(-1) * w_powers).sum(
                        -1) - w_max * per_group_in  # (Og,)
                    sum_wq = 2 * sum_wq - levels * (
                        valid[None, :, :, None] * w_sum)
                acc[..., g * per_group_out:(g + 1) * per_group_out] += sum_wq
    return acc.transpose(0, 3, 1, 2).astype(np.int32)
