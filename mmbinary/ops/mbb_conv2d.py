# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed multi-bit binary-branch (MBB) 2-D convolution.

An M-bit weight code ``w`` (odd, in ``[-(2^M-1), 2^M-1]``) and a K-bit
activation code are split into bit planes; the convolution is the sum of
``M * K`` binary convolutions, each an AND of 64-bit words and a popcount.
The compiled ops (``torch.ops.mmbinary.mbb_*``, CPU and CUDA) give integer
accumulators identical to the pure-PyTorch references below, and float
outputs identical to :func:`mbb_conv2d_reference`.

Packing format (``docs/packed_format.md`` has the full description):

* words are ``torch.int64`` holding 64 bits; channel ``c`` of a group is bit
  ``c % 64`` (least significant first) of word ``c // 64``, as in
  :func:`~mmbinary.ops.pack_signs`; each group starts at a word boundary,
  ``Wg = ceil(C / groups / 64)`` words per group; pad bits are 0;
* activation words ``(N, H, W, groups, K, Wg)``: plane ``k`` holds bit ``k``
  of the level ``q`` (``a = q`` unsigned, ``a = 2q - L`` signed,
  ``L = 2^K - 1``);
* weight words ``(O, M, kh, kw, Wg)``: plane ``m`` holds bit ``m`` of the
  offset binary ``n = (w + 2^M - 1) / 2``.

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
import warnings
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .ext_loader import build_info, ext_loaded

WORD_BITS = 64
MAX_BITS = 8

IntPair = Union[int, Sequence[int]]

__all__ = [
    'num_group_words', 'pack_weight_codes', 'unpack_weight_words',
    'pack_activation_codes', 'unpack_activation_words',
    'activation_codes_reference', 'quantize_pack', 'mbb_conv2d_accumulate',
    'mbb_conv2d_accumulate_reference', 'mbb_conv2d', 'mbb_conv2d_reference'
]


# ---- argument checks --------------------------------------------------------

def _check_bits(bits, name: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(
            f'{name} must be an integer in 1..{MAX_BITS}, got {bits!r}')
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(
            f'{name} must be an integer in 1..{MAX_BITS}, got {bits}')
    return int(bits)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{name} must be an integer, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')
    return int(value)


def _pair(value: IntPair, name: str, minimum: int) -> Tuple[int, int]:
    values = (value, value) if not isinstance(value, (tuple, list)) else value
    if len(values) != 2:
        raise ValueError(f'{name} must be an int or 2 ints, got {value!r}')
    return tuple(_check_int(v, name, minimum) for v in values)


def _float32_inv_step(inv_step) -> float:
    """``inv_step`` rounded to float32, as the kernels use it."""
    if isinstance(inv_step, Tensor):
        if inv_step.numel() != 1:
            raise ValueError('inv_step must be a number or a 1-element '
                             f'tensor, got shape {tuple(inv_step.shape)}')
        inv_step = inv_step.item()
    value = float(np.float32(inv_step))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f'inv_step must be a finite number > 0 (in float32), got '
            f'{inv_step!r}')
    return value


def _check_tensor(value, name: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f'{name} must be a Tensor, got {type(value).__name__}')


def _check_same_device(**tensors: Tensor) -> None:
    names = list(tensors)
    first = tensors[names[0]].device
    for name in names[1:]:
        if tensors[name].device != first:
            raise ValueError(f'{name} is on {tensors[name].device}, but '
                             f'{names[0]} is on {first}; move them to one '
                             'device')


def _check_groups(channels: int, groups: int, name: str) -> None:
    if channels < 1 or channels % groups:
        raise ValueError(f'{name} ({channels}) must be >= 1 and divisible by '
                         f'groups ({groups})')


def _check_bound(in_per_group: int, kernel: Tuple[int, int], w_bits: int,
                 a_bits: int) -> None:
    bound = (in_per_group * kernel[0] * kernel[1] * (2**w_bits - 1) *
             (2**a_bits - 1))
    if bound >= 2**31:
        raise ValueError(
            'the int32 accumulator could overflow: in_channels / groups * '
            f'kh * kw * (2^w_bits - 1) * (2^a_bits - 1) = {bound} must be '
            '< 2^31; use fewer bits or split the channels')


def _out_size(size: int, kernel: int, stride: int, padding: int,
              dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def num_group_words(in_channels: int, groups: int = 1) -> int:
    """Words per pixel per plane: ``ceil(in_channels / groups / 64)``."""
    return -(-(in_channels // groups) // WORD_BITS)


def _use_compiled(tensor: Tensor) -> bool:
    """Whether the compiled op can run on ``tensor``'s device."""
    if not ext_loaded():
        return False
    if tensor.device.type == 'cuda':
        return bool(build_info()['with_cuda'])
    return tensor.device.type == 'cpu'


_warned = set()


def _warn_fallback(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f'{name}: mmbinary\'s compiled extension is not available for '
            'this device; using the pure-PyTorch reference (identical '
            'results, much slower)')


# ---- bit packing (pure PyTorch / NumPy) -------------------------------------

def _pack_bits(bits: Tensor) -> Tensor:
    """(..., B) 0/1 values -> (..., ceil(B / 64)) int64 words, LSB first."""
    device = bits.device
    array = bits.to(torch.uint8).cpu().numpy()
    pad = -array.shape[-1] % WORD_BITS
    array = np.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, pad)])
    # Bit i of byte j is bit 8 * j + i; eight bytes read as one
    # little-endian uint64 put bit c at bit c % 64 of word c // 64.
    words = np.packbits(array, axis=-1, bitorder='little')
    words = np.ascontiguousarray(words).view('<u8').view(np.int64)
    return torch.from_numpy(words).to(device)


def _unpack_bits(words: Tensor, count: int) -> Tensor:
    """(..., Wg) int64 words -> (..., count) int64 bits."""
    shifts = torch.arange(WORD_BITS, device=words.device)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(-2)[..., :count]


def _check_integer_codes(codes: Tensor, name: str) -> Tensor:
    _check_tensor(codes, name)
    if codes.is_floating_point():
        if not bool(torch.equal(codes, torch.round(codes))):
            raise ValueError(f'{name} must hold integers')
    elif codes.dtype == torch.bool or codes.is_complex():
        raise TypeError(f'{name} must be an integer tensor, got {codes.dtype}')
    return codes.to(torch.int64)


def pack_weight_codes(codes: Tensor, w_bits: int, groups: int = 1) -> Tensor:
    """Pack odd M-bit weight codes into weight words (runs once, at
    conversion).

    Args:
        codes (Tensor): (O, C / groups, kh, kw) odd integers in
            ``[-(2^M-1), 2^M-1]``, any integer or float dtype.
        w_bits (int): M, 1..8.
        groups (int): convolution groups; O must be divisible by it.

    Returns:
        Tensor: (O, M, kh, kw, ceil(C / groups / 64)) int64 words on
        ``codes``' device.
    """
    w_bits = _check_bits(w_bits, 'w_bits')
    groups = _check_int(groups, 'groups', 1)
    codes = _check_integer_codes(codes, 'codes')
    if codes.dim() != 4:
        raise ValueError('codes must have shape (O, C / groups, kh, kw), got '
                         f'{tuple(codes.shape)}')
    _check_groups(codes.shape[0], groups, 'out channels of codes')
    mmax = 2**w_bits - 1
    if bool(((codes % 2 == 0) | (codes.abs() > mmax)).any()):
        raise ValueError(f'codes must be odd integers in [-{mmax}, {mmax}] '
                         f'for w_bits={w_bits}')
    offset = (codes + mmax) // 2  # (O, Cg, kh, kw) in [0, 2^M - 1]
    planes = torch.arange(w_bits, device=codes.device).view(1, -1, 1, 1, 1)
    bits = (offset.permute(0, 2, 3, 1).unsqueeze(1) >> planes) & 1
    return _pack_bits(bits)  # (O, M, kh, kw, Wg)


def unpack_weight_words(words: Tensor, in_channels: int, w_bits: int,
                        groups: int = 1) -> Tensor:
    """Inverse of :func:`pack_weight_codes`.

    Args:
        words (Tensor): (O, M, kh, kw, Wg) int64 words.
        in_channels (int): C (all groups).
        w_bits (int): M.
        groups (int): convolution groups.

    Returns:
        Tensor: (O, C / groups, kh, kw) int32 odd codes.
    """
    w_bits = _check_bits(w_bits, 'w_bits')
    _check_tensor(words, 'weight_words')
    if words.dim() != 5:
        raise ValueError('weight_words must have shape (O, w_bits, kh, kw, '
                         f'Wg), got {tuple(words.shape)}')
    _check_weight_words(words, words.shape[0], in_channels, w_bits, groups,
                        None)
    bits = _unpack_bits(words, in_channels // groups)  # (O, M, kh, kw, Cg)
    planes = torch.arange(w_bits, device=words.device).view(1, -1, 1, 1, 1)
    offset = (bits << planes).sum(1)  # (O, kh, kw, Cg)
    codes = 2 * offset - (2**w_bits - 1)
    return codes.permute(0, 3, 1, 2).to(torch.int32).contiguous()


def _levels_of_codes(codes: Tensor, a_bits: int, signed: bool) -> Tensor:
    levels = 2**a_bits - 1
    q = (codes + levels) // 2 if signed else codes
    if signed and bool((codes % 2 == 0).any()):
        raise ValueError('signed activation codes must be odd')
    if bool(((q < 0) | (q > levels)).any()):
        kind = f'[-{levels}, {levels}]' if signed else f'[0, {levels}]'
        raise ValueError(f'activation codes must lie in {kind} for '
                         f'a_bits={a_bits}')
    return q


def pack_activation_codes(codes: Tensor, a_bits: int, signed: bool,
                          groups: int = 1) -> Tensor:
    """Pack activation codes into activation words (pure PyTorch, slow).

    Args:
        codes (Tensor): (N, C, H, W) integer codes ``a``: ``q`` in
            ``[0, L]`` (unsigned) or odd ``2q - L`` in ``[-L, L]`` (signed).
        a_bits (int): K, 1..8.
        signed (bool): activation mode.
        groups (int): convolution groups; C must be divisible by it.

    Returns:
        Tensor: (N, H, W, groups, K, ceil(C / groups / 64)) int64 words.
    """
    a_bits = _check_bits(a_bits, 'a_bits')
    groups = _check_int(groups, 'groups', 1)
    codes = _check_integer_codes(codes, 'codes')
    if codes.dim() != 4:
        raise ValueError('codes must have shape (N, C, H, W), got '
                         f'{tuple(codes.shape)}')
    n, channels, height, width = codes.shape
    _check_groups(channels, groups, 'channels of codes')
    q = _levels_of_codes(codes, a_bits, bool(signed))
    planes = torch.arange(a_bits, device=codes.device).view(1, 1, 1, 1, -1, 1)
    q = q.permute(0, 2, 3, 1).reshape(n, height, width, groups, 1, -1)
    return _pack_bits((q >> planes) & 1)


def unpack_activation_words(words: Tensor, in_channels: int, a_bits: int,
                            signed: bool) -> Tensor:
    """Inverse of :func:`pack_activation_codes`.

    Args:
        words (Tensor): (N, H, W, groups, K, Wg) int64 words.
        in_channels (int): C (all groups).
        a_bits (int): K.
        signed (bool): activation mode.

    Returns:
        Tensor: (N, C, H, W) int32 codes ``a``.
    """
    a_bits = _check_bits(a_bits, 'a_bits')
    _check_tensor(words, 'act_words')
    if words.dim() != 6:
        raise ValueError('act_words must have shape (N, H, W, groups, a_bits,'
                         f' Wg), got {tuple(words.shape)}')
    groups = words.shape[3]
    _check_act_words(words, in_channels, a_bits, groups)
    bits = _unpack_bits(words, in_channels // groups)  # (N,H,W,G,K,Cg)
    planes = torch.arange(a_bits, device=words.device).view(1, 1, 1, 1, -1, 1)
    q = (bits << planes).sum(4).flatten(3)  # (N, H, W, C)
    codes = 2 * q - (2**a_bits - 1) if signed else q
    return codes.permute(0, 3, 1, 2).to(torch.int32).contiguous()


def _check_act_words(words: Tensor, in_channels: int, a_bits: int,
                     groups: int) -> None:
    _check_tensor(words, 'act_words')
    expected = (groups, a_bits, num_group_words(in_channels, groups))
    if (words.dtype != torch.int64 or words.dim() != 6 or
            tuple(words.shape[3:]) != expected):
        raise ValueError(
            'act_words must be int64 of shape (N, H, W, groups, a_bits, '
            f'ceil(in_channels / groups / 64)) = (N, H, W, {expected[0]}, '
            f'{expected[1]}, {expected[2]}), got {words.dtype} '
            f'{tuple(words.shape)}')


def _check_weight_words(words: Tensor, out_channels: int, in_channels: int,
                        w_bits: int, groups: int, kernel_size) -> None:
    _check_tensor(words, 'weight_words')
    _check_groups(in_channels, groups, 'in_channels')
    _check_groups(out_channels, groups, 'out_channels')
    wg = num_group_words(in_channels, groups)
    kh, kw = kernel_size if kernel_size is not None else (None, None)
    ok = (words.dtype == torch.int64 and words.dim() == 5 and
          words.shape[0] == out_channels and words.shape[1] == w_bits and
          words.shape[4] == wg and kh in (None, words.shape[2]) and
          kw in (None, words.shape[3]))
    if not ok:
        raise ValueError(
            'weight_words must be int64 of shape (out_channels, w_bits, kh, '
            'kw, ceil(in_channels / groups / 64)) = '
            f'({out_channels}, {w_bits}, {kh or "kh"}, {kw or "kw"}, {wg}), '
            f'got {words.dtype} {tuple(words.shape)}')


# ---- activation quantization ------------------------------------------------

def activation_codes_reference(input: Tensor, a_bits: int, inv_step,
                               signed: bool) -> Tensor:
    """Activation codes ``a`` of a float input, as the training layers
    compute them (float32, round half to even).

    Args:
        input (Tensor): (N, C, H, W) (any shape works) float input.
        a_bits (int): K, 1..8; ``L = 2^K - 1``.
        inv_step (float | Tensor): ``1 / step`` (> 0), rounded to float32.
        signed (bool): ``a = 2q - L`` with ``q = clamp(round((x * inv_step +
            L) * 0.5), 0, L)``; else ``a = q = clamp(round(x * inv_step), 0,
            L)``.

    Returns:
        Tensor: int32 codes, ``input``'s shape.
    """
    a_bits = _check_bits(a_bits, 'a_bits')
    inv = _float32_inv_step(inv_step)
    _check_tensor(input, 'input')
    levels = 2**a_bits - 1
    t = input.detach().float() * inv
    if signed:
        q = torch.clamp(torch.round((t + levels) * 0.5), 0, levels)
        return (2 * q - levels).to(torch.int32)
    return torch.clamp(torch.round(t), 0, levels).to(torch.int32)


def quantize_pack(input: Tensor, a_bits: int, inv_step, signed: bool,
                  groups: int = 1) -> Tensor:
    """Quantize and pack activations in one pass (compiled op).

    Args:
        input (Tensor): (N, C, H, W) float32, CPU or CUDA.
        a_bits (int): K, 1..8.
        inv_step (float | Tensor): ``1 / step`` (> 0), rounded to float32.
        signed (bool): activation mode (see
            :func:`activation_codes_reference`).
        groups (int): convolution groups; C must be divisible by it.

    Returns:
        Tensor: (N, H, W, groups, K, ceil(C / groups / 64)) int64 words,
        equal to ``pack_activation_codes(activation_codes_reference(...))``.
    """
    a_bits = _check_bits(a_bits, 'a_bits')
    groups = _check_int(groups, 'groups', 1)
    inv = _float32_inv_step(inv_step)
    _check_tensor(input, 'input')
    if input.dim() != 4:
        raise ValueError('input must have shape (N, C, H, W), got '
                         f'{tuple(input.shape)}')
    _check_groups(input.shape[1], groups, 'input channels')
    if not _use_compiled(input):
        _warn_fallback('quantize_pack')
        if input.dtype != torch.float32:
            raise TypeError(f'input must be float32, got {input.dtype}')
        codes = activation_codes_reference(input, a_bits, inv, signed)
        return pack_activation_codes(codes, a_bits, signed, groups)
    return torch.ops.mmbinary.mbb_quantize_pack(input.contiguous(), a_bits,
                                                inv, bool(signed), groups)


# ---- convolution ------------------------------------------------------------

def _conv_params(in_channels, out_channels, w_bits, a_bits, kernel_size,
                 stride, padding, dilation, groups, input_size):
    w_bits = _check_bits(w_bits, 'w_bits')
    a_bits = _check_bits(a_bits, 'a_bits')
    in_channels = _check_int(in_channels, 'in_channels', 1)
    out_channels = _check_int(out_channels, 'out_channels', 1)
    groups = _check_int(groups, 'groups', 1)
    _check_groups(in_channels, groups, 'in_channels')
    _check_groups(out_channels, groups, 'out_channels')
    kernel_size = _pair(kernel_size, 'kernel_size', 1)
    stride = _pair(stride, 'stride', 1)
    padding = _pair(padding, 'padding', 0)
    dilation = _pair(dilation, 'dilation', 1)
    _check_bound(in_channels // groups, kernel_size, w_bits, a_bits)
    out = [
        _out_size(*args)
        for args in zip(input_size, kernel_size, stride, padding, dilation)
    ]
    if min(out) < 1:
        raise ValueError(
            f'input size {tuple(input_size)} is too small for kernel_size '
            f'{kernel_size}, dilation {dilation} and padding {padding}: the '
            'output would be empty')
    return dict(w_bits=w_bits, a_bits=a_bits, in_channels=in_channels,
                out_channels=out_channels, groups=groups,
                kernel_size=kernel_size, stride=stride, padding=padding,
                dilation=dilation)


def mbb_conv2d_accumulate(act_words: Tensor, weight_words: Tensor, *,
                          in_channels: int, out_channels: int, w_bits: int,
                          a_bits: int, signed: bool, kernel_size: IntPair,
                          stride: IntPair = 1, padding: IntPair = 0,
                          dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """Integer accumulators of the packed convolution (compiled op).

    Args:
        act_words (Tensor): (N, H, W, groups, K, Wg) int64, from
            :func:`quantize_pack` or :func:`pack_activation_codes`.
        weight_words (Tensor): (O, M, kh, kw, Wg) int64, from
            :func:`pack_weight_codes`.
        in_channels (int): C; out_channels (int): O.
        w_bits (int): M, 1..8; a_bits (int): K, 1..8.
        signed (bool): activation mode.
        kernel_size, stride, padding, dilation (int | tuple[int, int]):
            as for :func:`torch.nn.functional.conv2d` (zero padding).
        groups (int): convolution groups.

    Returns:
        Tensor: (N, O, Ho, Wo) int32, ``sum w * a`` over the valid taps.
    """
    _check_tensor(act_words, 'act_words')
    if act_words.dim() != 6:
        raise ValueError('act_words must have shape (N, H, W, groups, a_bits,'
                         f' Wg), got {tuple(act_words.shape)}')
    p = _conv_params(in_channels, out_channels, w_bits, a_bits, kernel_size,
                     stride, padding, dilation, groups, act_words.shape[1:3])
    _check_act_words(act_words, p['in_channels'], p['a_bits'], p['groups'])
    _check_weight_words(weight_words, p['out_channels'], p['in_channels'],
                        p['w_bits'], p['groups'], p['kernel_size'])
    _check_same_device(act_words=act_words, weight_words=weight_words)
    if not _use_compiled(act_words):
        _warn_fallback('mbb_conv2d_accumulate')
        act = unpack_activation_words(act_words, p['in_channels'],
                                      p['a_bits'], signed)
        weight = unpack_weight_words(weight_words, p['in_channels'],
                                     p['w_bits'], p['groups'])
        return mbb_conv2d_accumulate_reference(act, weight, p['stride'],
                                               p['padding'], p['dilation'],
                                               p['groups'])
    return torch.ops.mmbinary.mbb_conv2d_accumulate(
        act_words, weight_words, p['in_channels'], p['out_channels'],
        p['w_bits'], p['a_bits'], bool(signed), p['kernel_size'],
        p['stride'], p['padding'], p['dilation'], p['groups'])


def mbb_conv2d_accumulate_reference(act_codes: Tensor, weight_codes: Tensor,
                                    stride: IntPair = 1, padding: IntPair = 0,
                                    dilation: IntPair = 1,
                                    groups: int = 1) -> Tensor:
    """Reference accumulators: a float64 convolution of the integer codes
    (exact: every partial sum is an integer below 2^53).

    Args:
        act_codes (Tensor): (N, C, H, W) integer activation codes ``a``.
        weight_codes (Tensor): (O, C / groups, kh, kw) integer weight codes.
        stride, padding, dilation (int | tuple[int, int]), groups (int): as
            for :func:`torch.nn.functional.conv2d`.

    Returns:
        Tensor: (N, O, Ho, Wo) int32.
    """
    out = F.conv2d(act_codes.to(torch.float64),
                   weight_codes.to(torch.float64), None, _pair(
                       stride, 'stride', 1), _pair(padding, 'padding', 0),
                   _pair(dilation, 'dilation', 1),
                   _check_int(groups, 'groups', 1))
    if bool((out.abs() >= 2**31).any()):
        raise ValueError('accumulators overflow int32')
    return out.to(torch.int32)


def _epilogue(acc: Tensor, out_scale: Tensor, out_bias: Tensor) -> Tensor:
    shape = (1, -1, 1, 1)
    return acc.float() * out_scale.view(shape) + out_bias.view(shape)


def _check_epilogue(out_scale: Tensor, out_bias: Tensor) -> None:
    _check_tensor(out_scale, 'out_scale')
    _check_tensor(out_bias, 'out_bias')
    if out_scale.dtype != torch.float32 or out_scale.dim() != 1:
        raise ValueError('out_scale must be a float32 tensor of shape '
                         f'(out_channels,), got {out_scale.dtype} '
                         f'{tuple(out_scale.shape)}')
    if out_bias.dtype != torch.float32 or out_bias.shape != out_scale.shape:
        raise ValueError('out_bias must be a float32 tensor of shape '
                         f'{tuple(out_scale.shape)} (as out_scale), got '
                         f'{out_bias.dtype} {tuple(out_bias.shape)}')


def mbb_conv2d(input: Tensor, weight_words: Tensor, out_scale: Tensor,
               out_bias: Tensor, *, in_channels: int, w_bits: int,
               a_bits: int, inv_step, signed: bool, kernel_size: IntPair,
               stride: IntPair = 1, padding: IntPair = 0,
               dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """Packed MBB convolution of a float input (compiled op): quantize and
    pack, accumulate, then ``float(acc) * out_scale[o] + out_bias[o]``.

    Args:
        input (Tensor): (N, C, H, W) float32, CPU or CUDA.
        weight_words (Tensor): (O, M, kh, kw, Wg) int64, from
            :func:`pack_weight_codes`.
        out_scale (Tensor): (O,) float32.
        out_bias (Tensor): (O,) float32.
        in_channels (int): C; O is ``out_scale``'s length.
        w_bits (int): M; a_bits (int): K; both 1..8.
        inv_step (float | Tensor): activation ``1 / step`` (> 0).
        signed (bool): activation mode.
        kernel_size, stride, padding, dilation, groups: as for
            :func:`torch.nn.functional.conv2d`.

    Returns:
        Tensor: (N, O, Ho, Wo) float32, equal to :func:`mbb_conv2d_reference`.
    """
    _check_tensor(input, 'input')
    if input.dim() != 4:
        raise ValueError('input must have shape (N, C, H, W), got '
                         f'{tuple(input.shape)}')
    _check_epilogue(out_scale, out_bias)
    p = _conv_params(in_channels, out_scale.shape[0], w_bits, a_bits,
                     kernel_size, stride, padding, dilation, groups,
                     input.shape[2:])
    inv = _float32_inv_step(inv_step)
    if input.shape[1] != p['in_channels']:
        raise ValueError(f'input has {input.shape[1]} channels, expected '
                         f'in_channels={p["in_channels"]}')
    _check_weight_words(weight_words, p['out_channels'], p['in_channels'],
                        p['w_bits'], p['groups'], p['kernel_size'])
    _check_same_device(input=input, weight_words=weight_words,
                       out_scale=out_scale, out_bias=out_bias)
    if not _use_compiled(input):
        _warn_fallback('mbb_conv2d')
        if input.dtype != torch.float32:
            raise TypeError(f'input must be float32, got {input.dtype}')
        weight = unpack_weight_words(weight_words, p['in_channels'],
                                     p['w_bits'], p['groups'])
        return mbb_conv2d_reference(
            input, weight, out_scale, out_bias, a_bits=p['a_bits'],
            inv_step=inv, signed=signed, stride=p['stride'],
            padding=p['padding'], dilation=p['dilation'], groups=p['groups'])
    return torch.ops.mmbinary.mbb_conv2d(
        input.contiguous(), weight_words, out_scale, out_bias,
        p['in_channels'], p['w_bits'], p['a_bits'], inv, bool(signed),
        p['kernel_size'], p['stride'], p['padding'], p['dilation'],
        p['groups'])


def mbb_conv2d_reference(input: Tensor, weight_codes: Tensor,
                         out_scale: Tensor, out_bias: Tensor, *, a_bits: int,
                         inv_step, signed: bool, stride: IntPair = 1,
                         padding: IntPair = 0, dilation: IntPair = 1,
                         groups: int = 1) -> Tensor:
    """Pure-PyTorch reference of :func:`mbb_conv2d` on unpacked codes.

    Args:
        input (Tensor): (N, C, H, W) float input.
        weight_codes (Tensor): (O, C / groups, kh, kw) integer weight codes.
        out_scale, out_bias (Tensor): (O,) float32.
        a_bits, inv_step, signed: see :func:`activation_codes_reference`.
        stride, padding, dilation, groups: as for
            :func:`torch.nn.functional.conv2d`.

    Returns:
        Tensor: (N, O, Ho, Wo) float32,
        ``acc.float() * out_scale[o] + out_bias[o]``.
    """
    _check_epilogue(out_scale, out_bias)
    codes = activation_codes_reference(input, a_bits, inv_step, signed)
    acc = mbb_conv2d_accumulate_reference(codes, weight_codes, stride,
                                          padding, dilation, groups)
    return _epilogue(acc, out_scale, out_bias)


# ---- shapes for torch.compile / meta tensors --------------------------------

def _register_fake() -> None:
    if not ext_loaded():
        return

    @torch.library.register_fake('mmbinary::mbb_quantize_pack')
    def _(input, a_bits, inv_step, is_signed, groups=1):
        n, channels, height, width = input.shape
        shape = (n, height, width, groups, a_bits,
                 num_group_words(channels, groups))
        return input.new_empty(shape, dtype=torch.int64)

    def out_shape(n, out_channels, size, kernel_size, stride, padding,
                  dilation):
        sizes = zip(size, kernel_size, stride, padding, dilation)
        return (n, out_channels, *(_out_size(*args) for args in sizes))

    @torch.library.register_fake('mmbinary::mbb_conv2d_accumulate')
    def _(act_words, weight_words, in_channels, out_channels, w_bits, a_bits,
          is_signed, kernel_size, stride, padding, dilation, groups):
        shape = out_shape(act_words.shape[0], out_channels,
                          act_words.shape[1:3], kernel_size, stride, padding,
                          dilation)
        return act_words.new_empty(shape, dtype=torch.int32)

    @torch.library.register_fake('mmbinary::mbb_conv2d')
    def _(input, weight_words, out_scale, out_bias, in_channels, w_bits,
          a_bits, inv_step, is_signed, kernel_size, stride, padding, dilation,
          groups):
        shape = out_shape(input.shape[0], out_scale.shape[0], input.shape[2:],
                          kernel_size, stride, padding, dilation)
        return input.new_empty(shape, dtype=torch.float32)


_register_fake()
