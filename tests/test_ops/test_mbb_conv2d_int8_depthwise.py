# Copyright (c) mmbinary contributors. All rights reserved.
"""The integer kernel's 1x1 conv and the depthwise conv after it in one
pass (``mbb_conv2d_int8_depthwise``, MobileNetV2's expand + depthwise):
the floats and words of the two ops one after the other, bit for bit."""
import random

import pytest
import torch

from mmbinary.ops import ext_loaded, pack_weight_codes, quantize_pack

pytestmark = pytest.mark.ext


def _supported() -> bool:
    ops = torch.ops.mmbinary
    return ext_loaded() and hasattr(ops, 'mbb_conv2d_int8_depthwise') and \
        bool(ops.mbb_int8_supported())


needs_vnni = pytest.mark.skipif(not _supported(),
                                reason='no AVX-512 VNNI or no extension')


def _layers(gen, c, o, m, kernel):
    """Random W``m`` 1x1 conv words (O, C) and epilogue, and a depthwise
    ``kernel`` conv on its O channels with its scale and bias."""
    codes = (torch.randint(0, 2**m, (o, c, 1, 1), generator=gen) * 2 -
             (2**m - 1)).int()
    expand = (pack_weight_codes(codes, m), torch.randn(o, generator=gen),
              torch.randn(o, generator=gen))
    depthwise = (torch.randn(o, 1, *kernel, generator=gen),
                 torch.rand(o, generator=gen) + 0.5,
                 torch.randn(o, generator=gen))
    return expand, depthwise


def _two_ops(act, expand, depthwise, c, m, a, signed, expand_act, geometry,
             dw_act, outputs):
    """The expand conv's float output, then the depthwise conv on it."""
    ops = torch.ops.mmbinary
    words, scale, bias = expand
    w8, wsum = ops.mbb_int8_prepare_weight(words, c, m, [1, 1])
    hidden, _ = ops.mbb_conv2d_int8_words(
        act, words, w8, wsum, scale, bias, c, m, a, signed, [1, 1], [1, 1],
        [0, 0], [1, 1], None, *expand_act, True, 0, 1.0, False)
    return ops.depthwise_pack(hidden, *depthwise, *geometry, *dw_act,
                              *outputs)


def _fused(act, expand, depthwise, c, m, a, signed, expand_act, geometry,
           dw_act, outputs):
    ops = torch.ops.mmbinary
    words, scale, bias = expand
    w8, wsum = ops.mbb_int8_prepare_weight(words, c, m, [1, 1])
    return ops.mbb_conv2d_int8_depthwise(act, words, w8, wsum, scale, bias,
                                         c, m, a, signed, *expand_act,
                                         *depthwise, *geometry, *dw_act,
                                         *outputs)


def _cases(count: int):
    rng = random.Random(12)
    for _ in range(count):
        yield dict(
            c=rng.choice([3, 16, 24, 64, 70, 160]),
            o=rng.choice([5, 16, 96, 144, 200]),
            m=rng.randint(1, 7), a=rng.randint(1, 8),
            signed=rng.random() < 0.5, n=rng.choice([1, 2]),
            h=rng.choice([1, 4, 9, 17]), w=rng.choice([3, 8, 21]),
            kernel=rng.choice([(3, 3), (3, 3), (5, 5), (1, 3), (3, 1)]),
            stride=rng.choice([1, 2]), dilation=rng.choice([1, 1, 2]),
            pad=rng.choice([0, 1, 2]), out_bits=rng.choice([0, 1, 2, 4, 8]),
            out_signed=rng.random() < 0.5, threads=rng.choice([1, 2]))


@needs_vnni
@pytest.mark.parametrize('case', list(_cases(24)))
@pytest.mark.parametrize('inner', ['vnni', 'amx'])
def test_fused_expand_depthwise_equals_the_two_ops(monkeypatch, case, inner):
    """Random channels, bits, kernels, strides, paddings, dilations, clamps,
    samples and threads: the same float output and words as the expand
    conv's float output through ``depthwise_pack`` (rows a thread computes
    for its first output row, halo rows, rows a stride skips)."""
    if inner == 'amx' and torch.ops.mmbinary.mbb_int8_variant() != 'amx':
        pytest.skip('this CPU has no AMX')
    monkeypatch.setenv('MMBINARY_INT8_KERNEL', inner)
    k = case
    kh, kw = k['kernel']
    pad = (min(k['pad'], kh), min(k['pad'], kw))
    # at least one output row and column
    height = max(k['h'], k['dilation'] * (kh - 1) + 1 - 2 * pad[0])
    width = max(k['w'], k['dilation'] * (kw - 1) + 1 - 2 * pad[1])
    gen = torch.Generator().manual_seed(k['c'] * 31 + k['o'])
    x = torch.randn(k['n'], k['c'], height, width, generator=gen)
    act = quantize_pack(x, k['a'], 2.0, k['signed'])
    expand, depthwise = _layers(gen, k['c'], k['o'], k['m'], (kh, kw))
    geometry = ([k['stride']] * 2, list(pad), [k['dilation']] * 2)
    args = (act, expand, depthwise, k['c'], k['m'], k['a'], k['signed'],
            (0.0, 6.0) if k['o'] % 2 else (-float('inf'), float('inf')),
            geometry, (0.0, 6.0) if k['out_signed'] else (-1.0, 4.0),
            (True, k['out_bits'], 0.8, k['out_signed']))
    before = torch.get_num_threads()
    torch.set_num_threads(k['threads'])
    try:
        fused = _fused(*args)
        words_only = _fused(*args[:-1], (False, ) + args[-1][1:]) \
            if k['out_bits'] else None
    finally:
        torch.set_num_threads(before)
    ref = _two_ops(*args)
    assert torch.equal(fused[0], ref[0])
    assert torch.equal(fused[1], ref[1])
    if words_only is not None:
        assert words_only[0].numel() == 0
        assert torch.equal(words_only[1], ref[1])


@needs_vnni
def test_fused_expand_depthwise_refuses_what_it_does_not_fuse():
    """Only a 1x1 conv with weights of at most 7 bits goes before the
    depthwise conv; a depthwise kernel of other channels is named."""
    gen = torch.Generator().manual_seed(0)
    act = quantize_pack(torch.randn(1, 16, 6, 6, generator=gen), 2, 2.0,
                        False)
    expand, depthwise = _layers(gen, 16, 32, 2, (3, 3))
    args = (act, expand, depthwise, 16, 2, 2, False, (0.0, 6.0),
            ([1, 1], [1, 1], [1, 1]), (0.0, 6.0), (False, 2, 1.0, False))
    assert _fused(*args)[1].shape == (1, 6, 6, 1, 2, 1)
    codes3 = (torch.randint(0, 4, (32, 16, 3, 3), generator=gen) * 2 -
              3).int()
    ops = torch.ops.mmbinary
    words3 = pack_weight_codes(codes3, 2)
    w8, wsum = ops.mbb_int8_prepare_weight(words3, 16, 2, [3, 3])
    with pytest.raises(RuntimeError, match='weight'):
        ops.mbb_conv2d_int8_depthwise(act, words3, w8, wsum, *expand[1:], 16,
                                      2, 2, False, 0.0, 6.0, *depthwise,
                                      [1, 1], [1, 1], [1, 1], 0.0, 6.0,
                                      False, 2, 1.0, False)
    codes8 = (torch.randint(0, 256, (32, 16, 1, 1), generator=gen) * 2 -
              255).int()
    with pytest.raises(RuntimeError, match='at most 7 bits'):
        _fused(act, (pack_weight_codes(codes8, 8), ) + expand[1:],
               *args[2:4], 8, *args[5:])
    with pytest.raises(RuntimeError, match='dw_weight must be a float32 '
                       'depthwise kernel of shape \\(32, 1, kh, kw\\)'):
        _fused(act, expand, (depthwise[0][:16], ) + depthwise[1:],
               *args[3:])


@needs_vnni
def test_fused_expand_depthwise_fake_kernel_matches():
    """The shapes, dtypes and strides torch.compile gets from the fake
    kernel are the real outputs'."""
    gen = torch.Generator().manual_seed(1)
    act = quantize_pack(torch.randn(2, 24, 7, 9, generator=gen), 2, 2.0,
                        True)
    (words, scale, bias), depthwise = _layers(gen, 24, 40, 2, (3, 3))
    ops = torch.ops.mmbinary
    w8, wsum = ops.mbb_int8_prepare_weight(words, 24, 2, [1, 1])
    for float_out, out_bits in ((True, 2), (False, 4), (True, 0)):
        args = (act, words, w8, wsum, scale, bias, 24, 2, 2, True, 0.0, 6.0,
                *depthwise, [2, 2], [1, 1], [1, 1], 0.0, 6.0, float_out,
                out_bits, 1.0, False)
        torch.library.opcheck(ops.mbb_conv2d_int8_depthwise.default, args,
                              test_utils=('test_faketensor', ))
