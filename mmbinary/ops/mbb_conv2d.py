# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed multi-bit binary-branch (MBB) 2-D convolution: the compiled ops
``torch.ops.mmbinary.mbb_*`` (CPU and CUDA), their Python wrappers and
their shapes for ``torch.compile``.

An M-bit weight code and a K-bit activation code are split into bit
planes; the convolution is the sum of ``M * K`` binary convolutions, each
an AND of 64-bit words and a popcount. The format is defined once, in
:mod:`mmbinary.packed_format` (mirrored by
``csrc/common/mbb_conv2d.h``); the pure-PyTorch references are in
:mod:`mmbinary.ops.mbb_conv2d_reference`.

The C++ launchers check every argument (dtype, shape, contiguity,
geometry, the int32 bound) and name it. The wrappers add only what they
cannot say as well: bit widths that are not integers (``True`` would pass
as 1), geometry given as an int, an ``inv_step`` tensor, and operands on
different devices. Without the extension for the input's device the
wrappers run the references (identical results, much slower), which check
their arguments themselves.
"""
import warnings
from typing import Optional

import torch
from torch import Tensor

from mmbinary import packed_format as fmt
from mmbinary.packed_format import IntPair, check_bits

from . import mbb_conv2d_reference as ref
from .ext_loader import build_info, ext_loaded

__all__ = ['quantize_pack', 'mbb_conv2d_accumulate', 'mbb_conv2d']


def _check_same_device(**tensors: Tensor) -> None:
    names = list(tensors)
    for name in names:
        if not isinstance(tensors[name], Tensor):
            raise TypeError(f'{name} must be a Tensor, got '
                            f'{type(tensors[name]).__name__}')
    first = tensors[names[0]].device
    for name in names[1:]:
        if tensors[name].device != first:
            raise ValueError(f'{name} is on {tensors[name].device}, but '
                             f'{names[0]} is on {first}; move them to one '
                             'device')


def _conv_args(in_channels, w_bits, a_bits, kernel_size, stride, padding,
               dilation, groups) -> dict:
    """The convolution arguments in the types of the op schemas."""
    return dict(in_channels=fmt.check_int(in_channels, 'in_channels', 1),
                w_bits=check_bits(w_bits, 'w_bits'),
                a_bits=check_bits(a_bits, 'a_bits'),
                kernel_size=fmt.pair(kernel_size, 'kernel_size', 1),
                stride=fmt.pair(stride, 'stride', 1),
                padding=fmt.pair(padding, 'padding', 0),
                dilation=fmt.pair(dilation, 'dilation', 1),
                groups=fmt.check_int(groups, 'groups', 1))


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


def _check_float_input(input: Tensor,
                       in_channels: Optional[int] = None) -> None:
    """The compiled ops' input checks, for the reference path."""
    if input.dtype != torch.float32:
        raise TypeError(f'input must be float32, got {input.dtype}')
    if input.dim() != 4:
        raise ValueError('input must have shape (N, C, H, W), got '
                         f'{tuple(input.shape)}')
    if in_channels is not None and input.shape[1] != in_channels:
        raise ValueError(f'input has {input.shape[1]} channels, expected '
                         f'in_channels={in_channels}')


def _reference_weight(weight_words: Tensor, p: dict) -> Tensor:
    """Weight codes for the reference path, with the op's checks."""
    fmt.check_groups(p['in_channels'], p['groups'], 'in_channels')
    fmt.check_groups(p['out_channels'], p['groups'], 'out_channels')
    fmt.check_accumulator_bound(p['in_channels'] // p['groups'],
                                p['kernel_size'], p['w_bits'], p['a_bits'])
    expected = (p['out_channels'], p['w_bits'], *p['kernel_size'],
                fmt.num_group_words(p['in_channels'], p['groups']))
    if tuple(weight_words.shape) != expected:
        raise ValueError(
            'weight_words must have shape (out_channels, w_bits, kh, kw, '
            f'ceil(in_channels / groups / 64)) = {expected}, got '
            f'{tuple(weight_words.shape)}')
    return ref.unpack_weight_words(weight_words, p['in_channels'],
                                   p['w_bits'], p['groups'])


def quantize_pack(input: Tensor, a_bits: int, inv_step, signed: bool,
                  groups: int = 1) -> Tensor:
    """Quantize and pack activations in one pass (compiled op).

    Args:
        input (Tensor): (N, C, H, W) float32, CPU or CUDA.
        a_bits (int): K, 1..8.
        inv_step (float | Tensor): ``1 / step`` (> 0), rounded to float32.
        signed (bool): activation mode (see
            :func:`~mmbinary.ops.activation_codes_reference`).
        groups (int): convolution groups; C must be divisible by it.

    Returns:
        Tensor: (N, H, W, groups, K, ceil(C / groups / 64)) int64 words,
        equal to ``pack_activation_codes(activation_codes_reference(...))``.
    """
    a_bits = check_bits(a_bits, 'a_bits')
    groups = fmt.check_int(groups, 'groups', 1)
    inv = ref.inv_step_value(inv_step)
    _check_same_device(input=input)
    if not _use_compiled(input):
        _warn_fallback('quantize_pack')
        _check_float_input(input)
        if bool(torch.isnan(input).any()):
            raise ValueError(
                'quantize_pack: input holds NaN, which has no activation '
                'level; packed words cannot represent it (mbb_conv2d on the '
                'float input propagates NaN to the outputs it reaches)')
        codes = ref.activation_codes_reference(input, a_bits, inv, signed)
        return ref.pack_activation_codes(codes, a_bits, signed, groups)
    return torch.ops.mmbinary.mbb_quantize_pack(_contiguous(input), a_bits,
                                                inv, bool(signed), groups)


def mbb_conv2d_accumulate(act_words: Tensor, weight_words: Tensor, *,
                          in_channels: int, out_channels: int, w_bits: int,
                          a_bits: int, signed: bool, kernel_size: IntPair,
                          stride: IntPair = 1, padding: IntPair = 0,
                          dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """Integer accumulators of the packed convolution (compiled op).

    Args:
        act_words (Tensor): (N, H, W, groups, K, Wg) int64, from
            :func:`quantize_pack` or
            :func:`~mmbinary.ops.pack_activation_codes`.
        weight_words (Tensor): (O, M, kh, kw, Wg) int64, from
            :func:`~mmbinary.ops.pack_weight_codes`.
        in_channels (int): C; out_channels (int): O.
        w_bits (int): M, 1..8; a_bits (int): K, 1..8.
        signed (bool): activation mode.
        kernel_size, stride, padding, dilation (int | tuple[int, int]):
            as for :func:`torch.nn.functional.conv2d` (zero padding).
        groups (int): convolution groups.

    Returns:
        Tensor: (N, O, Ho, Wo) int32, ``sum w * a`` over the valid taps.
    """
    p = _conv_args(in_channels, w_bits, a_bits, kernel_size, stride, padding,
                   dilation, groups)
    p['out_channels'] = fmt.check_int(out_channels, 'out_channels', 1)
    _check_same_device(act_words=act_words, weight_words=weight_words)
    if not _use_compiled(act_words):
        _warn_fallback('mbb_conv2d_accumulate')
        weight = _reference_weight(weight_words, p)
        act = ref.unpack_activation_words(act_words, p['in_channels'],
                                          p['a_bits'], signed)
        return ref.mbb_conv2d_accumulate_reference(act, weight, p['stride'],
                                                   p['padding'],
                                                   p['dilation'], p['groups'])
    return torch.ops.mmbinary.mbb_conv2d_accumulate(
        act_words, weight_words, p['in_channels'], p['out_channels'],
        p['w_bits'], p['a_bits'], bool(signed), p['kernel_size'],
        p['stride'], p['padding'], p['dilation'], p['groups'])


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
            :func:`~mmbinary.ops.pack_weight_codes`.
        out_scale (Tensor): (O,) float32.
        out_bias (Tensor): (O,) float32.
        in_channels (int): C; O is ``out_scale``'s length.
        w_bits (int): M; a_bits (int): K; both 1..8.
        inv_step (float | Tensor): activation ``1 / step`` (> 0).
        signed (bool): activation mode.
        kernel_size, stride, padding, dilation, groups: as for
            :func:`torch.nn.functional.conv2d`.

    Returns:
        Tensor: (N, O, Ho, Wo) float32, equal to
        :func:`~mmbinary.ops.mbb_conv2d_reference`.
    """
    _check_same_device(input=input, weight_words=weight_words,
                       out_scale=out_scale, out_bias=out_bias)
    p = _conv_args(in_channels, w_bits, a_bits, kernel_size, stride, padding,
                   dilation, groups)
    inv = ref.inv_step_value(inv_step)
    if not _use_compiled(input):
        _warn_fallback('mbb_conv2d')
        ref.check_epilogue(out_scale, out_bias)
        p['out_channels'] = out_scale.shape[0]
        _check_float_input(input, p['in_channels'])
        weight = _reference_weight(weight_words, p)
        return ref.mbb_conv2d_reference(
            input, weight, out_scale, out_bias, a_bits=p['a_bits'],
            inv_step=inv, signed=signed, stride=p['stride'],
            padding=p['padding'], dilation=p['dilation'], groups=p['groups'])
    return torch.ops.mmbinary.mbb_conv2d(
        _contiguous(input), weight_words, out_scale, out_bias,
        p['in_channels'], p['w_bits'], p['a_bits'], inv, bool(signed),
        p['kernel_size'], p['stride'], p['padding'], p['dilation'],
        p['groups'])


# ---- shapes for torch.compile / meta tensors --------------------------------

def _register_fake() -> None:
    if not ext_loaded():
        return

    @torch.library.register_fake('mmbinary::mbb_quantize_pack')
    def _(input, a_bits, inv_step, is_signed, groups=1):
        n, channels, height, width = input.shape
        shape = (n, height, width, groups, a_bits,
                 fmt.num_group_words(channels, groups))
        return input.new_empty(shape, dtype=torch.int64)

    def out_shape(n, out_channels, size, kernel_size, stride, padding,
                  dilation):
        sizes = zip(size, kernel_size, stride, padding, dilation)
        return (n, out_channels, *(fmt.conv_out_size(*args) for args in sizes))

    @torch.library.register_fake('mmbinary::mbb_conv2d_accumulate')
    def _(act_words, weight_words, in_channels, out_channels, w_bits, a_bits,
          is_signed, kernel_size, stride, padding, dilation, groups):
        shape = out_shape(act_words.shape[0], out_channels,
                          act_words.shape[1:3], kernel_size, stride, padding,
                          dilation)
        return _new_output(act_words, shape, torch.int32)

    @torch.library.register_fake('mmbinary::mbb_conv2d')
    def _(input, weight_words, out_scale, out_bias, in_channels, w_bits,
          a_bits, inv_step, is_signed, kernel_size, stride, padding, dilation,
          groups):
        shape = out_shape(input.shape[0], out_scale.shape[0], input.shape[2:],
                          kernel_size, stride, padding, dilation)
        return _new_output(input, shape, torch.float32)

    @torch.library.register_fake('mmbinary::mbb_conv2d_words')
    def _(act_words, weight_words, out_scale, out_bias, in_channels, w_bits,
          a_bits, is_signed, kernel_size, stride, padding, dilation, groups,
          residual, act_min, act_max, float_out, out_a_bits, out_inv_step,
          out_signed, weight_lanes=None):
        shape = out_shape(act_words.shape[0], out_scale.shape[0],
                          act_words.shape[1:3], kernel_size, stride, padding,
                          dilation)
        return _words_op_outputs(act_words, out_scale, shape, float_out,
                                 out_a_bits)

    @torch.library.register_fake('mmbinary::mbb_lane_prepare_weight')
    def _(weight_words, in_channels, w_bits, kernel_size):
        # Its size depends on the machine (empty without the lane kernel).
        size = torch.library.get_ctx().new_dynamic_size()
        return weight_words.new_empty((size, ), dtype=torch.int64)

    if not hasattr(torch.ops.mmbinary, 'mbb_conv2d_int8_words'):
        return

    @torch.library.register_fake('mmbinary::mbb_int8_prepare_weight')
    def _(weight_words, in_channels, w_bits, kernel_size):
        blocks = -(-weight_words.shape[0] // 16)
        taps = kernel_size[0] * kernel_size[1]
        codes = weight_words.new_empty(
            (blocks, taps, 16 * -(-in_channels // 64), 16, 4),
            dtype=torch.int8)
        sums = weight_words.new_empty(
            (kernel_size[0] + 1, kernel_size[1] + 1, 16 * blocks),
            dtype=torch.int32)
        return codes, sums

    def _float_input_int8(input, weight_words, weight_int8, weight_sums,
                          out_scale, out_bias, in_channels, w_bits, a_bits,
                          inv_step, is_signed, kernel_size, stride, padding,
                          dilation, residual, act_min, act_max, float_out,
                          out_a_bits, out_inv_step, out_signed):
        shape = out_shape(input.shape[0], out_scale.shape[0],
                          input.shape[2:4], kernel_size, stride, padding,
                          dilation)
        words_like = input.new_empty((0, ), dtype=torch.int64)
        return _words_op_outputs(words_like, out_scale, shape, float_out,
                                 out_a_bits)

    for name in ('mbb_conv2d_int8', 'mbb_conv2d_int8_im2col'):
        if hasattr(torch.ops.mmbinary, name):  # an older build lacks one
            torch.library.register_fake(f'mmbinary::{name}')(
                _float_input_int8)

    if hasattr(torch.ops.mmbinary, 'mbb_conv2d_int8_im2col_max_pool'):

        @torch.library.register_fake(
            'mmbinary::mbb_conv2d_int8_im2col_max_pool')
        def _(input, weight_words, weight_int8, weight_sums, out_scale,
              out_bias, in_channels, w_bits, a_bits, inv_step, is_signed,
              kernel_size, stride, padding, dilation, act_min, act_max,
              pool_kernel, pool_stride, pool_padding, out_a_bits=0,
              out_inv_step=1.0, out_signed=False):
            n, channels, height, width = out_shape(
                input.shape[0], out_scale.shape[0], input.shape[2:4],
                kernel_size, stride, padding, dilation)
            sizes = zip((height, width), pool_kernel, pool_stride,
                        pool_padding, (1, 1))
            pooled = (n, channels,
                      *(fmt.conv_out_size(*args) for args in sizes))
            words_like = input.new_empty((0, ), dtype=torch.int64)
            return _words_op_outputs(words_like, out_scale, pooled, True,
                                     out_a_bits)

    if hasattr(torch.ops.mmbinary, 'mbb_conv2d_int8_depthwise'):

        @torch.library.register_fake('mmbinary::mbb_conv2d_int8_depthwise')
        def _(act_words, weight_words, weight_int8, weight_sums, out_scale,
              out_bias, in_channels, w_bits, a_bits, is_signed, act_min,
              act_max, dw_weight, dw_scale, dw_bias, dw_stride, dw_padding,
              dw_dilation, dw_act_min, dw_act_max, float_out, out_a_bits,
              out_inv_step, out_signed):
            shape = out_shape(act_words.shape[0], out_scale.shape[0],
                              act_words.shape[1:3], dw_weight.shape[2:],
                              dw_stride, dw_padding, dw_dilation)
            return _words_op_outputs(act_words, out_scale, shape, float_out,
                                     out_a_bits)

    @torch.library.register_fake('mmbinary::mbb_conv2d_int8_words')
    def _(act_words, weight_words, weight_int8, weight_sums, out_scale,
          out_bias, in_channels, w_bits, a_bits, is_signed, kernel_size,
          stride, padding, dilation, residual, act_min, act_max, float_out,
          out_a_bits, out_inv_step, out_signed, accumulate_only=False,
          side_words=None, side_inv_step=1.0, side_signed=False):
        shape = out_shape(act_words.shape[0], out_scale.shape[0],
                          act_words.shape[1:3], kernel_size, stride, padding,
                          dilation)
        if accumulate_only:
            return (_new_output(act_words, shape, torch.int32),
                    act_words.new_empty((0, )))
        return _words_op_outputs(act_words, out_scale, shape, float_out,
                                 out_a_bits)


def _words_op_outputs(act_words: Tensor, out_scale: Tensor, shape,
                      float_out: bool, out_a_bits: int):
    """The (float output, next layer's words) pair of the words ops, each
    empty where not asked for; ``shape``: (N, O, Ho, Wo)."""
    out = (_new_output(act_words, shape, torch.float32) if float_out else
           out_scale.new_empty((0, )))
    words = act_words.new_empty((0, ))
    if out_a_bits > 0:
        n, channels, height, width = shape
        words = act_words.new_zeros(
            (n, height, width, 1, out_a_bits, fmt.num_group_words(channels)),
            dtype=torch.int64)
    return out, words


def _contiguous(input: Tensor) -> Tensor:
    """``input`` NCHW- or channels-last-contiguous (the CPU op packs either
    where it lies; CUDA makes it NCHW)."""
    if input.is_contiguous(memory_format=torch.channels_last):
        return input
    return input.contiguous()


def _new_output(like: Tensor, shape, dtype: torch.dtype) -> Tensor:
    """An op's (N, O, Ho, Wo) output: channels-last on the CPU (the CPU
    kernels write it so), NCHW on CUDA."""
    out = like.new_empty(shape, dtype=dtype)
    if like.device.type == 'cpu':
        out = out.contiguous(memory_format=torch.channels_last)
    return out


_register_fake()
