# Copyright (c) mmbinary contributors. All rights reserved.
"""Per-layer choice of the fastest exact kernel of a packed layer.

The bit-serial AND + popcount kernel does ``M * K`` binary products per
weight and wastes most of each 64-bit word when a layer has few input
channels (a MobileNetV2 expansion conv reads 16 or 24). For such layers a
float32 convolution of the integer codes is exact as well: when the
accumulator bound ``C / groups * kh * kw * (2^M - 1) * (2^K - 1)`` is below
``2^24`` every partial sum is an integer float32 holds exactly, in any
summation order, so ``float(acc)`` and the epilogue after it are the same
numbers the packed kernel gives. :func:`run_packed_conv` times both on the
first input of each shape and keeps the faster one for that shape
(``layer.kernel_choice``); ``layer.kernel`` forces one.
"""
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbinary.ops import unpack_weight_words

#: Largest accumulator bound for which float32 sums of codes are exact.
EXACT_FLOAT_BOUND = 2**24
#: ``layer.kernel`` values.
KERNELS = ('auto', 'binary', 'codes')


def accumulator_bound(layer) -> int:
    """``C / groups * kh * kw * (2^M - 1) * (2^K - 1)`` of a packed layer."""
    kh, kw = layer.kernel_size
    return (layer.in_channels // layer.groups * kh * kw *
            (2**layer.w_bits - 1) * (2**layer.a_bits - 1))


def codes_exact(layer) -> bool:
    """Whether the float convolution of codes is exact for ``layer``."""
    return accumulator_bound(layer) < EXACT_FLOAT_BOUND


def _weight_codes(layer) -> Tensor:
    """(O, C / groups, kh, kw) float32 weight codes, cached per version of
    ``weight_words``."""
    words = layer.weight_words
    key = (words.data_ptr(), words._version)
    cached = layer.__dict__.get('_mmbinary_weight_codes')
    if cached is None or cached[0] != key:
        codes = unpack_weight_words(words, layer.in_channels, layer.w_bits,
                                    layer.groups).float()
        cached = (key, codes)
        layer.__dict__['_mmbinary_weight_codes'] = cached
    return cached[1]


def codes_conv(layer, input: Tensor) -> Tensor:
    """The packed layer's output through a float32 convolution of the
    activation and weight codes (exact when :func:`codes_exact`).

    Args:
        layer (PackedMBBConv2d): the layer.
        input (Tensor): (N, C, H, W) float32.

    Returns:
        Tensor: (N, O, Ho, Wo) float32, equal to the packed kernel's.
    """
    levels = float(2**layer.a_bits - 1)
    # The training layers' activation codes, in float32 (round half to
    # even; clamping before rounding equals after, as 0 and L are
    # integers); NaN stays NaN and reaches the outputs it touches.
    t = input * float(layer.inv_step)
    if layer.signed:
        q = torch.round(torch.clamp((t + levels) * 0.5, 0.0, levels))
        codes = q * 2.0 - levels
    else:
        codes = torch.round(torch.clamp(t, 0.0, levels))
    acc = F.conv2d(codes, _weight_codes(layer), None, layer.stride,
                   layer.padding, layer.dilation, layer.groups)
    shape = (1, -1, 1, 1)
    # float(acc) * scale + bias: two roundings, as the kernel.
    return acc.mul_(layer.out_scale.view(shape)).add_(
        layer.out_bias.view(shape))


def _seconds(run: Callable[[], Tensor]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def choose_kernel(layer, input: Tensor, binary: Callable[[Tensor], Tensor]
                  ) -> str:
    """``'binary'`` or ``'codes'`` for this input shape: forced by
    ``layer.kernel``, else measured once (best of two runs each) and kept
    in ``layer.kernel_choice``."""
    forced = getattr(layer, 'kernel', 'auto')
    if forced not in KERNELS:
        raise ValueError(f'kernel must be one of {KERNELS}, got {forced!r}')
    if forced != 'auto' or not codes_exact(layer):
        return 'binary' if forced == 'auto' else forced
    choices: Dict[Tuple[int, ...], str] = layer.__dict__.setdefault(
        'kernel_choice', {})
    shape = tuple(input.shape)
    if shape not in choices:
        runs = {
            'binary': lambda: binary(input),
            'codes': lambda: codes_conv(layer, input)
        }
        times = {name: min(_seconds(run), _seconds(run))
                 for name, run in runs.items()}
        choices[shape] = min(times, key=times.get)
    return choices[shape]
