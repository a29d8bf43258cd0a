# Copyright (c) mmbinary contributors. All rights reserved.
"""Pure-PyTorch references of the packed MBB conv ops, and the packing of
tensors.

The packing functions take and return tensors and run the NumPy packing of
:mod:`mmbinary.packed_format` (the one definition of the format); the
activation codes are those of :func:`mmbinary.quant.activation_codes`, the
quantizer the training layers use. The compiled ops
(:mod:`mmbinary.ops.mbb_conv2d`) give integer accumulators identical to
:func:`mbb_conv2d_accumulate_reference` and float outputs identical to
:func:`mbb_conv2d_reference`; without the extension they run these.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from mmbinary import packed_format as fmt
from mmbinary.packed_format import IntPair, check_bits
from mmbinary.quant import activation_codes

__all__ = [
    'pack_weight_codes', 'unpack_weight_words', 'pack_activation_codes',
    'unpack_activation_words', 'activation_codes_reference',
    'mbb_conv2d_accumulate_reference', 'mbb_conv2d_reference', 'nan_outputs'
]


def _check_tensor(value, name: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f'{name} must be a Tensor, got {type(value).__name__}')


def _integer_codes(codes: Tensor, name: str):
    """``codes`` as an int64 NumPy array (floats must hold integers)."""
    _check_tensor(codes, name)
    if codes.dtype == torch.bool or codes.is_complex():
        raise TypeError(f'{name} must be an integer tensor, got {codes.dtype}')
    if codes.is_floating_point() and not bool(
            torch.equal(codes, torch.round(codes))):
        raise ValueError(f'{name} must hold integers')
    return codes.detach().to(torch.int64).cpu().numpy()


def _words(words: Tensor, name: str):
    _check_tensor(words, name)
    if words.dtype != torch.int64:
        raise ValueError(f'{name} must be an int64 tensor, got {words.dtype}')
    return words.detach().cpu().numpy()


def _tensor(array, device: torch.device) -> Tensor:
    return torch.from_numpy(array).to(device)


def inv_step_value(inv_step) -> float:
    """``inv_step`` (a number or a 1-element tensor) as the float32 value
    the kernels use (:func:`~mmbinary.packed_format.check_inv_step`)."""
    if isinstance(inv_step, Tensor):
        if inv_step.numel() != 1:
            raise ValueError('inv_step must be a number or a 1-element '
                             f'tensor, got shape {tuple(inv_step.shape)}')
        inv_step = inv_step.item()
    return fmt.check_inv_step(inv_step)


# ---- packing ----------------------------------------------------------------

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
    words = fmt.pack_weight_codes(_integer_codes(codes, 'codes'), w_bits,
                                  groups)
    return _tensor(words, codes.device)


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
    codes = fmt.unpack_weight_words(_words(words, 'weight_words'),
                                    in_channels, w_bits, groups)
    return _tensor(codes, words.device)


def pack_activation_codes(codes: Tensor, a_bits: int, signed: bool,
                          groups: int = 1) -> Tensor:
    """Pack activation codes into activation words (slow; the compiled
    :func:`~mmbinary.ops.quantize_pack` quantizes and packs in one pass).

    Args:
        codes (Tensor): (N, C, H, W) integer codes ``a``: ``q`` in
            ``[0, L]`` (unsigned) or odd ``2q - L`` in ``[-L, L]`` (signed).
        a_bits (int): K, 1..8.
        signed (bool): activation mode.
        groups (int): convolution groups; C must be divisible by it.

    Returns:
        Tensor: (N, H, W, groups, K, ceil(C / groups / 64)) int64 words.
    """
    array = _integer_codes(codes, 'codes')
    if array.ndim != 4:
        raise ValueError('codes must have shape (N, C, H, W), got '
                         f'{tuple(codes.shape)}')
    levels = fmt.codes_to_levels(array, a_bits, bool(signed))
    return _tensor(fmt.pack_activation_levels(levels, a_bits, groups),
                   codes.device)


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
    levels = fmt.unpack_activation_levels(_words(words, 'act_words'),
                                          in_channels, a_bits)
    codes = fmt.levels_to_codes(levels, a_bits, bool(signed))
    return _tensor(codes.astype('int32'), words.device)


# ---- references -------------------------------------------------------------

def activation_codes_reference(input: Tensor, a_bits: int, inv_step,
                               signed: bool) -> Tensor:
    """Activation codes ``a`` of a float input, as the training layers
    compute them (:func:`mmbinary.quant.activation_codes`: float32, round
    half to even).

    Args:
        input (Tensor): (N, C, H, W) (any shape works) float input.
        a_bits (int): K, 1..8; ``L = 2^K - 1``.
        inv_step (float | Tensor): ``1 / step`` (> 0), rounded to float32.
        signed (bool): ``a = 2q - L`` with ``q = clamp(round((x * inv_step +
            L) * 0.5), 0, L)``; else ``a = q = clamp(round(x * inv_step), 0,
            L)``.

    Returns:
        Tensor: int32 codes, ``input``'s shape; a NaN input has level 0, as
        in the kernels (``mbb_quantize_level``).
    """
    a_bits = check_bits(a_bits, 'a_bits')
    inv = torch.tensor(inv_step_value(inv_step), dtype=torch.float32)
    _check_tensor(input, 'input')
    _, codes = activation_codes(input, inv.to(input.device), a_bits,
                                bool(signed))
    nan = torch.isnan(input)
    if bool(nan.any()):  # level 0, as the kernels quantize it
        zero = fmt.levels_to_codes(0, a_bits, bool(signed))
        codes = codes.masked_fill(nan, zero)
    return codes


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

    Raises:
        ValueError: for an empty output or accumulators beyond int32.
    """
    stride = fmt.pair(stride, 'stride', 1)
    padding = fmt.pair(padding, 'padding', 0)
    dilation = fmt.pair(dilation, 'dilation', 1)
    groups = fmt.check_int(groups, 'groups', 1)
    _check_tensor(act_codes, 'act_codes')
    _check_tensor(weight_codes, 'weight_codes')
    size, kernel = tuple(act_codes.shape[2:]), tuple(weight_codes.shape[2:])
    if any(
            fmt.conv_out_size(*args) < 1
            for args in zip(size, kernel, stride, padding, dilation)):
        raise ValueError(
            f'input size {size} is too small for kernel_size {kernel}, '
            f'dilation {dilation} and padding {padding}: the output would '
            'be empty')
    out = F.conv2d(act_codes.to(torch.float64),
                   weight_codes.to(torch.float64), None, stride, padding,
                   dilation, groups)
    if bool((out.abs() >= fmt.ACC_LIMIT).any()):
        raise ValueError('accumulators overflow int32')
    return out.to(torch.int32)


def check_epilogue(out_scale: Tensor, out_bias: Tensor) -> None:
    """``out_scale`` and ``out_bias`` must be float32 ``(O,)`` tensors."""
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


def mbb_conv2d_reference(input: Tensor, weight_codes: Tensor,
                         out_scale: Tensor, out_bias: Tensor, *, a_bits: int,
                         inv_step, signed: bool, stride: IntPair = 1,
                         padding: IntPair = 0, dilation: IntPair = 1,
                         groups: int = 1) -> Tensor:
    """Pure-PyTorch reference of :func:`~mmbinary.ops.mbb_conv2d` on
    unpacked codes.

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
    check_epilogue(out_scale, out_bias)
    codes = activation_codes_reference(input, a_bits, inv_step, signed)
    acc = mbb_conv2d_accumulate_reference(codes, weight_codes, stride,
                                          padding, dilation, groups)
    shape = (1, -1, 1, 1)
    out = acc.float() * out_scale.view(shape) + out_bias.view(shape)
    if bool(torch.isnan(input).any()):
        out = out.masked_fill(
            nan_outputs(input, out.shape[1], weight_codes.shape[2:], stride,
                        padding, dilation, groups), float('nan'))
    return out


def nan_outputs(input: Tensor, out_channels: int, kernel_size: IntPair,
                stride: IntPair, padding: IntPair, dilation: IntPair,
                groups: int) -> Tensor:
    """Where the packed op (``mbb_propagate_nan``) writes NaN: every output
    of a group whose valid taps read a pixel with a NaN in that group's
    channels, as a float convolution gives NaN there.

    Args:
        input (Tensor): (N, C, H, W) float input.

    Returns:
        Tensor: (N, O, Ho, Wo) bool.
    """
    n, channels, height, width = input.shape
    pixels = torch.isnan(input).reshape(n, groups, channels // groups, height,
                                        width).any(2).float()
    ones = pixels.new_ones(groups, 1, *fmt.pair(kernel_size, 'kernel_size'))
    hit = F.conv2d(pixels, ones, None, fmt.pair(stride, 'stride', 1),
                   fmt.pair(padding, 'padding'),
                   fmt.pair(dilation, 'dilation', 1), groups) > 0.5
    return hit.repeat_interleave(out_channels // groups, 1)
