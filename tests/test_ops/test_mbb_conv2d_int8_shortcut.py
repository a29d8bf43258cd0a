# Copyright (c) mmbinary contributors. All rights reserved.
"""A ResNet block's last conv with its shortcut conv as the residual, the
shortcut's rows computed as the conv needs them
(``mbb_conv2d_int8_words_shortcut``): the floats and words of the shortcut
conv's float output added by ``mbb_conv2d_int8_words``, bit for bit."""
import random

import pytest
import torch

from mmbinary.ops import ext_loaded, pack_weight_codes, quantize_pack

pytestmark = pytest.mark.ext


def _supported() -> bool:
    ops = torch.ops.mmbinary
    return ext_loaded() and hasattr(
        ops, 'mbb_conv2d_int8_words_shortcut') and bool(
            ops.mbb_int8_supported())


needs_vnni = pytest.mark.skipif(not _supported(),
                                reason='no AVX-512 VNNI or no extension')


def _conv(gen, c, o, m, kernel):
    """Random W``m`` weight words (O, C, kh, kw), the integer kernel's
    layout of them, and an epilogue (scale, bias)."""
    codes = (torch.randint(0, 2**m, (o, c, *kernel), generator=gen) * 2 -
             (2**m - 1)).int()
    words = pack_weight_codes(codes, m)
    w8, wsum = torch.ops.mmbinary.mbb_int8_prepare_weight(
        words, c, m, list(kernel))
    return (words, w8, wsum, torch.randn(o, generator=gen) * 0.1,
            torch.randn(o, generator=gen))


def _two_ops(act, main, main_args, x, side, side_args, act_clamp, outputs):
    """The shortcut conv's float output, then the conv with it added."""
    ops = torch.ops.mmbinary
    c_side, m_side, a_side, inv_side, signed_side, stride_side = side_args
    residual, _ = ops.mbb_conv2d_int8(
        x, *side, c_side, m_side, a_side, inv_side, signed_side, [1, 1],
        stride_side, [0, 0], [1, 1], None, -float('inf'), float('inf'),
        True, 0, 1.0, False)
    return ops.mbb_conv2d_int8_words(act, *main, *main_args, residual,
                                     *act_clamp, *outputs)


def _fused(act, main, main_args, x, side, side_args, act_clamp, outputs):
    return torch.ops.mmbinary.mbb_conv2d_int8_words_shortcut(
        act, *main, *main_args, x, *side, *side_args, *act_clamp, *outputs)


def _cases(count: int):
    rng = random.Random(21)
    for _ in range(count):
        kernel = rng.choice([(1, 1), (1, 1), (3, 3)])
        yield dict(
            c=rng.choice([16, 64, 70, 128]), o=rng.choice([16, 48, 96, 200]),
            c_side=rng.choice([8, 64, 100]), m=rng.randint(1, 4),
            a=rng.randint(1, 4), m_side=rng.choice([2, 4, 8]),
            a_side=rng.choice([2, 8]), signed=rng.random() < 0.5,
            signed_side=rng.random() < 0.5, n=rng.choice([1, 2]),
            h=rng.choice([1, 5, 9]), w=rng.choice([3, 8, 17]),
            kernel=kernel, pad=kernel[0] // 2, stride=rng.choice([1, 2]),
            relu=rng.random() < 0.7, out_bits=rng.choice([0, 1, 2, 8]),
            out_signed=rng.random() < 0.5, threads=rng.choice([1, 2]))


@needs_vnni
@pytest.mark.parametrize('case', list(_cases(24)))
@pytest.mark.parametrize('inner', ['vnni', 'amx'])
def test_conv_with_shortcut_rows_equals_the_two_ops(monkeypatch, case, inner):
    """Random channels, bits (8-bit shortcuts: their patch sums), kernels,
    shortcut strides, clamps, samples and threads: the same float output
    and words as the shortcut conv's float output added by the conv."""
    if inner == 'amx' and torch.ops.mmbinary.mbb_int8_variant() != 'amx':
        pytest.skip('this CPU has no AMX')
    monkeypatch.setenv('MMBINARY_INT8_KERNEL', inner)
    k = case
    gen = torch.Generator().manual_seed(k['c'] * 31 + k['o'] + k['h'])
    # the block's input and its strided shortcut; the conv's input has the
    # output's size
    x = torch.randn(k['n'], k['c_side'], k['h'] * k['stride'],
                    k['w'] * k['stride'], generator=gen).relu()
    if k['signed_side']:
        x = x - 0.5
    if k['n'] % 2 == 0:
        x = x.contiguous(memory_format=torch.channels_last)
    act = quantize_pack(torch.randn(k['n'], k['c'], k['h'], k['w'],
                                    generator=gen), k['a'], 2.0, k['signed'])
    main = _conv(gen, k['c'], k['o'], k['m'], k['kernel'])
    side = _conv(gen, k['c_side'], k['o'], k['m_side'], (1, 1))
    main_args = (k['c'], k['m'], k['a'], k['signed'], list(k['kernel']),
                 [1, 1], [k['pad']] * 2, [1, 1])
    side_args = (k['c_side'], k['m_side'], k['a_side'],
                 float(2**k['a_side'] - 1) / 1.5, k['signed_side'],
                 [k['stride']] * 2)
    act_clamp = (0.0, float('inf')) if k['relu'] else (-float('inf'),
                                                       float('inf'))
    outputs = (True, k['out_bits'], 0.8, k['out_signed'])
    args = (act, main, main_args, x, side, side_args, act_clamp, outputs)
    before = torch.get_num_threads()
    torch.set_num_threads(k['threads'])
    try:
        fused = _fused(*args)
        words_only = _fused(*args[:-1], (False, ) + outputs[1:]) \
            if k['out_bits'] else None
    finally:
        torch.set_num_threads(before)
    ref = _two_ops(*args)
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(fused[0], ref[0])
    assert torch.equal(fused[1], ref[1])
    if words_only is not None:
        assert words_only[0].numel() == 0
        assert torch.equal(words_only[1], ref[1])


@needs_vnni
def test_conv_with_shortcut_refuses_other_outputs_and_nan():
    """A shortcut whose output is not the conv's is named with both
    shapes; a NaN in the shortcut's input is refused as mbb_conv2d_int8
    refuses it."""
    gen = torch.Generator().manual_seed(0)
    act = quantize_pack(torch.randn(1, 16, 6, 6, generator=gen), 2, 2.0,
                        False)
    main = _conv(gen, 16, 32, 2, (1, 1))
    main_args = (16, 2, 2, False, [1, 1], [1, 1], [0, 0], [1, 1])
    tail = ((0.0, float('inf')), (True, 2, 1.0, False))
    x = torch.rand(1, 8, 12, 12, generator=gen)
    side = _conv(gen, 8, 32, 8, (1, 1))
    good = (8, 8, 8, 100.0, False, [2, 2])
    assert _fused(act, main, main_args, x, side, good, *tail)[0].shape == \
        (1, 32, 6, 6)
    with pytest.raises(RuntimeError,
                       match=r"shortcut conv's output \(N, O, Ho, Wo\) must "
                       r'be the conv\'s, got \(1, 32, 12, 12\) and '
                       r'\(1, 32, 6, 6\)'):
        _fused(act, main, main_args, x, side, good[:-1] + ([1, 1], ), *tail)
    other = _conv(gen, 8, 24, 8, (1, 1))
    with pytest.raises(RuntimeError, match='must be the conv'):
        _fused(act, main, main_args, x, other, good, *tail)
    bad = x.clone()
    bad[0, 3, 4, 4] = float('nan')
    with pytest.raises(RuntimeError, match='NaN'):
        _fused(act, main, main_args, bad, side, good, *tail)


@needs_vnni
def test_conv_with_shortcut_fake_kernel_matches():
    """The shapes, dtypes and strides torch.compile gets from the fake
    kernel are the real outputs'."""
    gen = torch.Generator().manual_seed(1)
    act = quantize_pack(torch.randn(2, 24, 5, 7, generator=gen), 2, 2.0,
                        True)
    main = _conv(gen, 24, 40, 2, (3, 3))
    side = _conv(gen, 16, 40, 8, (1, 1))
    x = torch.rand(2, 16, 10, 14, generator=gen)
    ops = torch.ops.mmbinary
    for float_out, out_bits in ((True, 2), (False, 4), (True, 0)):
        args = (act, *main, 24, 2, 2, True, [3, 3], [1, 1], [1, 1], [1, 1],
                x, *side, 16, 8, 8, 100.0, False, [2, 2], 0.0,
                float('inf'), float_out, out_bits, 1.0, False)
        torch.library.opcheck(ops.mbb_conv2d_int8_words_shortcut.default,
                              args, test_utils=('test_faketensor', ))
