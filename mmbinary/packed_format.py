# Copyright (c) mmbinary contributors. All rights reserved.
"""The packed MBB format, in NumPy: the one Python definition of the bit
limits, the word size, the word counts, the weight and activation packing,
the activation levels, the per-tap weight sums, the pad-bit check and the
bit-exact integer accumulator.

It needs NumPy only (no PyTorch), so an export can be read and run without
torch, and it is the bottom layer of the package: ``mmbinary.quant`` takes
its bit limits from here. Its only mirror is the C++ header
``mmbinary/ops/csrc/common/mbb_conv2d.h``
(``kMBBWordBits``, ``mbb_num_words``, ``mbb_out_size``,
``mbb_accumulator_bound``, ``mbb_quantize_level``, ``mbb_epilogue``,
``mbb_word_mask``); a change of the format changes this module and that
header. ``docs/packed_format.md`` describes the format; the PyTorch
references (:mod:`mmbinary.ops.mbb_conv2d_reference`) and the export
(:mod:`mmbinary.export`) are built on this module. Everything here works on
``numpy`` arrays (no PyTorch tensors).

* A word is 64 bits, held in ``int64`` (the bits unchanged). Channel ``c``
  of a group is bit ``c % 64`` (least significant first) of word
  ``c // 64``; each group starts at a word boundary, ``Wg = ceil(C / groups
  / 64)`` words per group and plane; pad bits are 0.
* Weight words ``(O, M, kh, kw, Wg)``: plane ``m`` holds bit ``m`` of the
  offset binary ``n = (w + 2^M - 1) / 2`` of the odd code ``w``.
* Activation words ``(N, H, W, groups, K, Wg)``: plane ``k`` holds bit
  ``k`` of the level ``q`` in ``[0, L]``, ``L = 2^K - 1``; the code the
  convolution sums is ``a = q`` (unsigned) or ``a = 2q - L`` (signed).

Accumulator of one output, over the valid (non-padded) taps only::

    S_wa = sum_{m,k} 2^(m+k) popcount(W_m & A_k)
    S_a  = sum_k 2^k popcount(A_k)                      # = sum of q
    sum w*q = 2 * S_wa - (2^M - 1) * S_a                # unsigned: acc
    signed:  acc = 2 * sum w*q - L * (sum of w over the valid taps)

Zero padding keeps its float meaning (a padded tap adds 0, not the code of
0). Epilogue: ``out = float32(acc) * out_scale[o] + out_bias[o]`` (two
roundings, no FMA).
"""
import math
import numbers
from typing import Sequence, Tuple, Union

import numpy as np

#: Bit widths of weights and activations (the encoding's and the packed
#: op's, ``kMBBMaxBits`` in the C++ header).
MIN_BITS = 1
MAX_BITS = 8
#: Bits of one packed word.
WORD_BITS = 64
#: Accumulators are int32: ``accumulator_bound`` must stay below this.
ACC_LIMIT = 2**31

IntPair = Union[int, Sequence[int]]

__all__ = [
    'MIN_BITS', 'MAX_BITS', 'WORD_BITS', 'ACC_LIMIT', 'check_bits',
    'num_levels', 'check_int', 'pair', 'check_inv_step',
    'num_group_words', 'conv_out_size', 'accumulator_bound',
    'check_accumulator_bound', 'check_groups', 'pack_bits', 'unpack_bits',
    'pack_weight_codes', 'unpack_weight_bits', 'unpack_weight_words',
    'activation_levels', 'levels_to_codes', 'codes_to_levels',
    'pack_activation_levels', 'unpack_activation_levels', 'tap_weight_sums',
    'check_pad_bits', 'epilogue', 'mbb_conv2d_accumulate_numpy'
]


# ---- arguments --------------------------------------------------------------

def check_bits(bits, name: str = 'bits') -> int:
    """Return ``bits`` if it is an integer in 1..8, else raise ``ValueError``.

    Args:
        bits: the value to check (``bool`` and floats are refused, also
            integral floats such as ``2.0``).
        name (str): the argument name used in the error message.
    """
    if (isinstance(bits, bool) or not isinstance(bits, numbers.Integral)
            or not MIN_BITS <= bits <= MAX_BITS):
        raise ValueError(f'{name} must be an integer in {MIN_BITS}..'
                         f'{MAX_BITS}, got {bits!r}')
    return int(bits)


def num_levels(bits: int) -> int:
    """``2^bits - 1``: the largest code (odd codes span ``+-`` of it)."""
    return (1 << check_bits(bits)) - 1


def check_int(value, name: str, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``.

    Raises:
        ValueError: naming ``name`` (bools and floats are refused).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f'{name} must be an integer, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')
    return int(value)


def pair(value: IntPair,
         name: str = 'value',
         minimum: int = 0) -> Tuple[int, int]:
    """An int or two ints as ``(h, w)``, each checked by :func:`check_int`.

    Args:
        value (int | Sequence[int]): e.g. ``3`` or ``(3, 1)``.
        name (str): the argument name for error messages.
        minimum (int): the least allowed value (1 for ``kernel_size``,
            ``stride`` and ``dilation``, 0 for ``padding``).
    """
    values = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(
            f'{name} must be an int or 2 ints, got {value!r}') from None
    if len(values) != 2:
        raise ValueError(f'{name} must be an int or 2 ints, got {value!r}')
    return check_int(values[0], name, minimum), check_int(
        values[1], name, minimum)


def check_inv_step(inv_step) -> float:
    """``inv_step`` rounded to float32, as the kernels use it.

    Raises:
        ValueError: unless it is a finite number > 0 in float32.
    """
    if isinstance(inv_step, np.ndarray) and inv_step.size == 1:
        inv_step = inv_step.item()
    if isinstance(inv_step, bool) or not isinstance(inv_step, numbers.Real):
        raise ValueError(f'inv_step must be a finite number > 0, got '
                         f'{inv_step!r}')
    value = float(np.float32(inv_step))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f'inv_step must be a finite number > 0 (in float32), got '
            f'{inv_step!r}')
    return value


# ---- geometry ---------------------------------------------------------------

def num_group_words(in_channels: int, groups: int = 1) -> int:
    """Words per pixel per plane: ``ceil(in_channels / groups / 64)``."""
    return -(-(in_channels // groups) // WORD_BITS)


def conv_out_size(size: int, kernel: int, stride: int, padding: int,
                  dilation: int) -> int:
    """Output size of one convolution axis (<= 0 when the input is too
    small)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def accumulator_bound(group_channels: int, kernel_size: Tuple[int, int],
                      w_bits: int, a_bits: int) -> int:
    """Largest ``|acc|``: ``Cg * kh * kw * (2^M - 1) * (2^K - 1)``."""
    return (group_channels * kernel_size[0] * kernel_size[1] *
            num_levels(w_bits) * num_levels(a_bits))


def check_accumulator_bound(group_channels: int,
                            kernel_size: Tuple[int, int], w_bits: int,
                            a_bits: int) -> int:
    """Return :func:`accumulator_bound`; raise ``ValueError`` when it does
    not fit the int32 accumulator."""
    bound = accumulator_bound(group_channels, kernel_size, w_bits, a_bits)
    if bound >= ACC_LIMIT:
        raise ValueError(
            'the int32 accumulator could overflow: in_channels / groups * '
            f'kh * kw * (2^w_bits - 1) * (2^a_bits - 1) = {bound} must be '
            '< 2^31; use fewer bits or split the channels')
    return bound


def check_groups(channels: int, groups: int, name: str) -> None:
    """Raise ``ValueError`` unless ``channels`` is >= 1 and divisible by
    ``groups``."""
    if channels < 1 or channels % groups:
        raise ValueError(f'{name} ({channels}) must be >= 1 and divisible by '
                         f'groups ({groups})')


# ---- words ------------------------------------------------------------------

def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(..., B) 0/1 values -> (..., ceil(B / 64)) int64 words, bit ``b`` at
    bit ``b % 64`` of word ``b // 64``, pad bits 0."""
    bits = np.asarray(bits).astype(np.uint8)
    pad = -bits.shape[-1] % WORD_BITS
    bits = np.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
    # Bit i of byte j is bit 8 * j + i; eight bytes read as one
    # little-endian uint64 put bit b at bit b % 64 of word b // 64.
    words = np.packbits(bits, axis=-1, bitorder='little')
    return np.ascontiguousarray(words).view('<u8').view(np.int64)


def unpack_bits(words: np.ndarray, count: int) -> np.ndarray:
    """(..., Wg) 64-bit words -> (..., count) uint8 bits (inverse of
    :func:`pack_bits`)."""
    as_bytes = np.ascontiguousarray(words).view('<u8').view(np.uint8)
    bits = np.unpackbits(as_bytes.reshape(*words.shape[:-1], -1), axis=-1,
                         bitorder='little')
    return bits[..., :count]


def _planes(values: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Bit planes ``(values >> b) & 1``, b = 0..bits-1, on a new ``axis``."""
    shifts = np.arange(bits, dtype=np.int64)
    planes = (values[..., None] >> shifts) & 1
    return np.moveaxis(planes, -1, axis)


def _integer_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind == 'f':
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f'{name} must hold integers')
    elif array.dtype.kind not in 'iu':
        raise TypeError(f'{name} must be an integer array, got {array.dtype}')
    return array.astype(np.int64)


def _check_words(words: np.ndarray, name: str, expected: Tuple,
                 layout: str) -> None:
    shape = tuple(words.shape)
    ok = words.dtype in (np.int64, np.uint64) and len(shape) == len(
        expected) and all(e is None or s == e
                          for s, e in zip(shape, expected))
    if not ok:
        wanted = ', '.join('*' if e is None else str(e) for e in expected)
        raise ValueError(f'{name} must have shape {layout} = ({wanted}) '
                         f'(64-bit words), got {words.dtype} {shape}')


# ---- weights ----------------------------------------------------------------

def pack_weight_codes(codes, w_bits: int, groups: int = 1) -> np.ndarray:
    """Pack odd M-bit weight codes into weight words (once, at conversion).

    Args:
        codes (np.ndarray): (O, C / groups, kh, kw) odd integers in
            ``[-(2^M-1), 2^M-1]`` (any integer dtype, or floats holding
            integers).
        w_bits (int): M, 1..8.
        groups (int): convolution groups; O must be divisible by it.

    Returns:
        np.ndarray: (O, M, kh, kw, ceil(C / groups / 64)) int64 words.
    """
    w_bits = check_bits(w_bits, 'w_bits')
    groups = check_int(groups, 'groups', 1)
    codes = _integer_array(codes, 'codes')
    if codes.ndim != 4:
        raise ValueError('codes must have shape (O, C / groups, kh, kw), got '
                         f'{codes.shape}')
    check_groups(codes.shape[0], groups, 'out channels of codes')
    mmax = num_levels(w_bits)
    if ((codes % 2 == 0) | (np.abs(codes) > mmax)).any():
        raise ValueError(f'codes must be odd integers in [-{mmax}, {mmax}] '
                         f'for w_bits={w_bits}')
    offset = (codes + mmax) // 2  # (O, Cg, kh, kw) in [0, 2^M - 1]
    bits = _planes(offset.transpose(0, 2, 3, 1), w_bits, axis=1)
    return pack_bits(bits)  # (O, M, kh, kw, Wg)


def unpack_weight_bits(weight_words: np.ndarray, in_channels: int,
                       groups: int = 1) -> np.ndarray:
    """The weight planes' bits, channels before the kernel taps.

    Args:
        weight_words (np.ndarray): (O, M, kh, kw, Wg) 64-bit words.
        in_channels (int): C (all groups).
        groups (int): convolution groups.

    Returns:
        np.ndarray: (O, M, C / groups, kh, kw) uint8 bits of the offset
        binaries ``n`` (plane ``m`` = bit ``m``).
    """
    bits = unpack_bits(weight_words, in_channels // groups)
    return bits.transpose(0, 1, 4, 2, 3)


def unpack_weight_words(weight_words: np.ndarray, in_channels: int,
                        w_bits: int, groups: int = 1) -> np.ndarray:
    """Inverse of :func:`pack_weight_codes`.

    Args:
        weight_words (np.ndarray): (O, M, kh, kw, Wg) 64-bit words.
        in_channels (int): C (all groups).
        w_bits (int): M.
        groups (int): convolution groups.

    Returns:
        np.ndarray: (O, C / groups, kh, kw) int32 odd codes.
    """
    w_bits = check_bits(w_bits, 'w_bits')
    in_channels = check_int(in_channels, 'in_channels', 1)
    groups = check_int(groups, 'groups', 1)
    check_groups(in_channels, groups, 'in_channels')
    weight_words = np.asarray(weight_words)
    _check_words(weight_words, 'weight_words',
                 (None, w_bits, None, None,
                  num_group_words(in_channels, groups)),
                 '(out_channels, w_bits, kh, kw, '
                 'ceil(in_channels / groups / 64))')
    bits = unpack_weight_bits(weight_words, in_channels, groups)
    shifts = np.arange(w_bits, dtype=np.int64).reshape(1, -1, 1, 1, 1)
    offset = (bits.astype(np.int64) << shifts).sum(1)  # (O, Cg, kh, kw)
    return (2 * offset - num_levels(w_bits)).astype(np.int32)


def tap_weight_sums(weight_words: np.ndarray, in_channels: int, w_bits: int,
                    groups: int) -> np.ndarray:
    """Sum of the weight codes over the channels of each tap:
    ``2 * sum_m 2^m popcount(W[o, m, i, j, :]) - (2^M - 1) * Cg``.

    Args:
        weight_words (np.ndarray): (O, M, kh, kw, Wg) 64-bit words.

    Returns:
        np.ndarray: (O, kh, kw) int32.
    """
    words = np.ascontiguousarray(weight_words).view(np.uint64)
    counts = np.bitwise_count(words).astype(np.int64).sum(-1)  # (O,M,kh,kw)
    powers = (1 << np.arange(w_bits, dtype=np.int64)).reshape(1, -1, 1, 1)
    per_group = in_channels // groups
    sums = 2 * (counts * powers).sum(1) - num_levels(w_bits) * per_group
    return sums.astype(np.int32)


def check_pad_bits(words: np.ndarray, in_channels: int, groups: int) -> bool:
    """Whether the pad bits (channels Cg..64*Wg-1 of the last word of each
    group) of weight or activation words are 0."""
    used = in_channels // groups - WORD_BITS * (words.shape[-1] - 1)
    if used == WORD_BITS:
        return True
    mask = np.uint64((1 << WORD_BITS) - (1 << used))
    last = np.ascontiguousarray(words[..., -1]).view(np.uint64)
    return not bool((last & mask).any())


# ---- activations ------------------------------------------------------------

def activation_levels(x: np.ndarray, a_bits: int, inv_step: float,
                      signed: bool) -> np.ndarray:
    """Levels ``q`` in ``[0, 2^K - 1]`` of a float input, exactly as the
    packed op computes them (``mbb_quantize_level``: float32, no fused
    multiply-add, half to even; NaN gives 0, and the op's ``mbb_conv2d``
    then writes NaN to the outputs that read it)::

        unsigned: q = clamp(round(x * inv_step), 0, L)
        signed:   q = clamp(round((x * inv_step + L) * 0.5), 0, L)

    (the float arithmetic of :func:`mmbinary.quant.activation_codes`).

    Args:
        x (np.ndarray): float input, any shape (converted to float32).
        a_bits (int): K, 1..8.
        inv_step (float): ``1 / step`` (> 0), rounded to float32.
        signed (bool): the activation mode.

    Returns:
        np.ndarray: int64 levels, ``x``'s shape.
    """
    levels = np.float32(num_levels(check_bits(a_bits, 'a_bits')))
    t = np.asarray(x, dtype=np.float32) * np.float32(check_inv_step(inv_step))
    if signed:
        t = (t + levels) * np.float32(0.5)
    q = np.clip(np.rint(t), np.float32(0), levels)
    return np.where(np.isnan(q), np.float32(0), q).astype(np.int64)


def levels_to_codes(q: np.ndarray, a_bits: int, signed: bool) -> np.ndarray:
    """The integers the convolution sums: ``a = q`` (unsigned) or
    ``a = 2q - L`` (signed)."""
    return 2 * q - num_levels(a_bits) if signed else q


def codes_to_levels(codes, a_bits: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`levels_to_codes`, with the codes checked.

    Raises:
        ValueError: signed codes that are even, or codes out of range.
    """
    levels = num_levels(check_bits(a_bits, 'a_bits'))
    codes = _integer_array(codes, 'codes')
    if signed and (codes % 2 == 0).any():
        raise ValueError('signed activation codes must be odd')
    q = (codes + levels) // 2 if signed else codes
    if ((q < 0) | (q > levels)).any():
        kind = f'[-{levels}, {levels}]' if signed else f'[0, {levels}]'
        raise ValueError(f'activation codes must lie in {kind} for '
                         f'a_bits={a_bits}')
    return q


def pack_activation_levels(q: np.ndarray, a_bits: int,
                           groups: int = 1) -> np.ndarray:
    """Pack activation levels into activation words.

    Args:
        q (np.ndarray): (N, C, H, W) integer levels in ``[0, 2^K - 1]``.
        a_bits (int): K, 1..8.
        groups (int): convolution groups; C must be divisible by it.

    Returns:
        np.ndarray: (N, H, W, groups, K, ceil(C / groups / 64)) int64.
    """
    a_bits = check_bits(a_bits, 'a_bits')
    groups = check_int(groups, 'groups', 1)
    q = _integer_array(q, 'levels')
    if q.ndim != 4:
        raise ValueError(f'levels must have shape (N, C, H, W), got '
                         f'{q.shape}')
    n, channels, height, width = q.shape
    check_groups(channels, groups, 'channels of the activations')
    if q.size and (q.min() < 0 or q.max() > num_levels(a_bits)):
        raise ValueError(f'activation levels must lie in '
                         f'[0, {num_levels(a_bits)}] for a_bits={a_bits}')
    q = q.transpose(0, 2, 3, 1).reshape(n, height, width, groups, -1)
    return pack_bits(_planes(q, a_bits, axis=4))  # (N, H, W, G, K, Wg)


def unpack_activation_levels(act_words: np.ndarray, in_channels: int,
                             a_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_activation_levels`.

    Args:
        act_words (np.ndarray): (N, H, W, groups, K, Wg) 64-bit words.
        in_channels (int): C (all groups).
        a_bits (int): K.

    Returns:
        np.ndarray: (N, C, H, W) int64 levels.
    """
    a_bits = check_bits(a_bits, 'a_bits')
    act_words = np.asarray(act_words)
    if act_words.ndim != 6:
        raise ValueError('act_words must have shape (N, H, W, groups, '
                         f'a_bits, Wg), got {act_words.shape}')
    groups = act_words.shape[3]
    check_groups(in_channels, groups, 'in_channels')
    _check_words(act_words, 'act_words',
                 (None, None, None, groups, a_bits,
                  num_group_words(in_channels, groups)),
                 '(N, H, W, groups, a_bits, ceil(in_channels / groups / 64))')
    bits = unpack_bits(act_words, in_channels // groups).astype(np.int64)
    shifts = np.arange(a_bits, dtype=np.int64).reshape(-1, 1)
    q = (bits << shifts).sum(4)  # (N, H, W, G, Cg)
    n, height, width = act_words.shape[:3]
    return q.reshape(n, height, width, in_channels).transpose(0, 3, 1, 2)


# ---- accumulator and epilogue -----------------------------------------------

def epilogue(acc: np.ndarray, out_scale: np.ndarray,
             out_bias: np.ndarray) -> np.ndarray:
    """``float32(acc) * out_scale[o] + out_bias[o]`` over axis 1 (two
    float32 roundings, as ``mbb_epilogue``)."""
    shape = (1, -1) + (1, ) * (acc.ndim - 2)
    out = acc.astype(np.float32) * np.asarray(
        out_scale, np.float32).reshape(shape)
    return out + np.asarray(out_bias, np.float32).reshape(shape)


def _popcount(words: np.ndarray) -> np.ndarray:
    return np.bitwise_count(words).astype(np.int64)


def mbb_conv2d_accumulate_numpy(act_words: np.ndarray,
                                weight_words: np.ndarray, *,
                                in_channels: int, w_bits: int, a_bits: int,
                                signed: bool, stride: IntPair = 1,
                                padding: IntPair = 0, dilation: IntPair = 1,
                                groups: int = 1) -> np.ndarray:
    """Integer accumulators of the packed MBB convolution, in integer
    arithmetic only (AND and popcount on the words, as the kernels and a
    hardware implementation compute them).

    Per output ``(n, o, y, x)``, over the valid (non-padded) taps
    ``(i, j)``::

        S_wa = sum_{m,k} 2^(m+k) popcount(W[o, m, i, j] & A[n, y', x', g, k])
        S_a  = sum_k 2^k popcount(A[n, y', x', g, k])
        sum w*q = 2 * S_wa - (2^M - 1) * S_a
        unsigned: acc += sum w*q
        signed:   acc += 2 * sum w*q - L * (sum of w over the tap's channels)

    Args:
        act_words (np.ndarray): (N, H, W, groups, K, Wg) 64-bit words (int64
            or uint64), e.g. from ``mmbinary.ops.quantize_pack``.
        weight_words (np.ndarray): (O, M, kh, kw, Wg) 64-bit words, from
            :func:`pack_weight_codes`.
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
    (sh, sw), (ph, pw), (dh, dw) = (pair(stride, 'stride', 1),
                                    pair(padding, 'padding', 0),
                                    pair(dilation, 'dilation', 1))
    out_h = conv_out_size(height, kh, sh, ph, dh)
    out_w = conv_out_size(width, kw, sw, pw, dw)
    per_group_in, per_group_out = in_channels // groups, out_channels // groups
    w_max, levels = num_levels(w_bits), num_levels(a_bits)
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
