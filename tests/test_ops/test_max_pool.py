# Copyright (c) mmbinary contributors. All rights reserved.
"""torch.ops.mmbinary.max_pool2d_channels_last: torch's max pool, bit for
bit (signed zeros and NaN included), in both kernels."""
import random

import pytest
import torch
import torch.nn.functional as F

from mmbinary.ops import ext_loaded

pytestmark = [
    pytest.mark.ext,
    pytest.mark.skipif(not ext_loaded(), reason='no compiled extension')
]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _awkward_input(n, c, h, w, seed) -> torch.Tensor:
    """Random values with ties, signed zeros, infinities and NaN."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).round()  # many ties
    pick = torch.rand(n, c, h, w, generator=gen)
    x[pick < 0.15] = 0.0
    x[(pick >= 0.15) & (pick < 0.3)] = -0.0
    x[(pick >= 0.3) & (pick < 0.32)] = float('-inf')
    x[(pick >= 0.32) & (pick < 0.33)] = float('nan')
    x[(pick >= 0.33) & (pick < 0.34)] = float('inf')
    return x.contiguous(memory_format=torch.channels_last)


def _cases(count: int):
    rng = random.Random(0)
    yield (1, 64, 33, 41, (3, 3), (2, 2), (1, 1), (1, 1))  # ResNet's stem
    yield (2, 200, 9, 10, (2, 2), (2, 2), (0, 0), (1, 1))
    for _ in range(count):
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        yield (rng.randint(1, 2), rng.randint(1, 150), rng.randint(5, 14),
               rng.randint(5, 14), (kh, kw),
               (rng.randint(1, 3), rng.randint(1, 3)),
               (rng.randint(0, kh // 2), rng.randint(0, kw // 2)),
               (rng.randint(1, 2), rng.randint(1, 2)))


@pytest.mark.parametrize('kernel', ['auto', 'portable'])
@pytest.mark.parametrize('case', list(_cases(14)))
def test_max_pool_equals_torch_bit_for_bit(case, kernel, monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    n, c, h, w, k, s, p, d = case
    x = _awkward_input(n, c, h, w, seed=c * h + w)
    expected = F.max_pool2d(x, k, s, p, d)
    out = torch.ops.mmbinary.max_pool2d_channels_last(x, k, s, p, d)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.shape == expected.shape
    assert torch.equal(_bits(out), _bits(expected))


def test_max_pool_checks_its_arguments_and_has_a_fake_kernel():
    op = torch.ops.mmbinary.max_pool2d_channels_last
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(op.default, (x, [3, 3], [2, 2], [1, 1], [1, 1]),
                          test_utils=('test_faketensor', ))
    with pytest.raises(RuntimeError, match='padding must be at most half'):
        op(x, [3, 3], [1, 1], [2, 2], [1, 1])
    with pytest.raises(RuntimeError, match='stride must be >= 1'):
        op(x, [3, 3], [0, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match='float32'):
        op(x.double(), [3, 3], [2, 2], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match='output would be empty'):
        op(x, [7, 7], [1, 1], [0, 0], [1, 1])


def _int8_supported() -> bool:
    ops = torch.ops.mmbinary
    return hasattr(ops, 'mbb_int8_supported') and bool(
        ops.mbb_int8_supported())


def _stem_cases(count: int):
    rng = random.Random(5)
    yield (3, 64, 7, 2, 3, 8, 8, True, (3, 3), (2, 2), (1, 1))  # ResNet
    for _ in range(count):
        k, pk = rng.choice([1, 3, 5, 7]), rng.randint(1, 4)
        yield (rng.randint(1, 8), rng.randint(1, 40), k, rng.randint(1, 2),
               rng.randint(0, k // 2), rng.randint(1, 8), rng.randint(1, 8),
               rng.random() < 0.5, (pk, rng.randint(1, 4)),
               (rng.randint(1, 3), rng.randint(1, 3)),
               (rng.randint(0, pk // 2), 0))


@pytest.mark.skipif(not _int8_supported(), reason='no integer kernel')
@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('case', list(_stem_cases(10)))
def test_conv_with_fused_max_pool_equals_conv_then_pool(case, threads):
    """mbb_conv2d_int8_im2col_max_pool pools the conv's rows as they come
    (their accumulators, then one epilogue per pooled output): the values
    of mbb_conv2d_int8_im2col then max_pool2d, bit for bit, with positive,
    negative and zero scales, with one or two threads (each thread
    computes the rows it needs)."""
    from mmbinary.ops import pack_weight_codes
    c, o, k, s, p, m, a, signed, pk, ps, pp = case
    gen = torch.Generator().manual_seed(c * 31 + o)
    x = torch.randn(2, c, 23, 29, generator=gen).contiguous(
        memory_format=torch.channels_last)
    codes = (torch.randint(0, 2**m, (o, c, k, k), generator=gen) * 2 -
             (2**m - 1)).int()
    ops = torch.ops.mmbinary
    words = pack_weight_codes(codes, m)
    flat = pack_weight_codes(
        codes.permute(0, 2, 3, 1).reshape(o, k * k * c, 1, 1).contiguous(), m)
    w8 = ops.mbb_int8_prepare_weight(flat, k * k * c, m, [1, 1])[0]
    wsum = ops.mbb_int8_prepare_weight(words, c, m, [k, k])[1]
    scale, bias = torch.randn(o, generator=gen), torch.randn(o, generator=gen)
    scale[::5] = 0.0  # the pool picks per channel by the scale's sign
    conv_args = (x, words, w8, wsum, scale, bias, c, m, a, 1.3, signed,
                 [k, k], [s, s], [p, p], [1, 1])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        conv = ops.mbb_conv2d_int8_im2col(*conv_args, None, 0.0,
                                          float('inf'), True, 0, 1.0,
                                          False)[0]
        if min(conv.shape[-2:]) < pk[0] - 2 * pp[0] or \
                conv.shape[-1] < pk[1] - 2 * pp[1]:
            pytest.skip('the pool has no output for this geometry')
        expected = F.max_pool2d(conv, pk, ps, pp)
        out, no_words = ops.mbb_conv2d_int8_im2col_max_pool(
            *conv_args, 0.0, float('inf'), pk, ps, pp)
        # the pooled rows quantized into the next layer's words as well
        next_bits, next_inv, next_signed = 1 + o % 4, 0.7, o % 2 == 0
        expected_words = ops.mbb_quantize_pack(expected, next_bits,
                                               next_inv, next_signed)
        with_words, words = ops.mbb_conv2d_int8_im2col_max_pool(
            *conv_args, 0.0, float('inf'), pk, ps, pp, next_bits, next_inv,
            next_signed)
    finally:
        torch.set_num_threads(previous)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(_bits(out), _bits(expected))
    assert no_words.numel() == 0
    assert torch.equal(_bits(with_words), _bits(expected))
    assert torch.equal(words, expected_words)


@pytest.mark.skipif(not _int8_supported(), reason='no integer kernel')
def test_conv_with_fused_max_pool_checks_the_pool_and_has_a_fake_kernel():
    from mmbinary.ops import pack_weight_codes
    ops = torch.ops.mmbinary
    codes = (torch.randint(0, 4, (8, 3, 3, 3)) * 2 - 3).int()
    words = pack_weight_codes(codes, 2)
    flat = pack_weight_codes(
        codes.permute(0, 2, 3, 1).reshape(8, 27, 1, 1).contiguous(), 2)
    w8 = ops.mbb_int8_prepare_weight(flat, 27, 2, [1, 1])[0]
    wsum = ops.mbb_int8_prepare_weight(words, 3, 2, [3, 3])[1]
    x = torch.randn(1, 3, 12, 12)
    args = [x, words, w8, wsum, torch.ones(8), torch.zeros(8), 3, 2, 2, 1.0,
            True, [3, 3], [1, 1], [1, 1], [1, 1], 0.0, 6.0, [3, 3], [2, 2],
            [1, 1]]
    torch.library.opcheck(ops.mbb_conv2d_int8_im2col_max_pool.default,
                          tuple(args), test_utils=('test_faketensor', ))
    torch.library.opcheck(ops.mbb_conv2d_int8_im2col_max_pool.default,
                          tuple(args + [2, 0.5, True]),
                          test_utils=('test_faketensor', ))
    with pytest.raises(RuntimeError, match='out_a_bits must be'):
        ops.mbb_conv2d_int8_im2col_max_pool(*args, 9, 0.5, True)
    args[-1] = [2, 2]
    with pytest.raises(RuntimeError, match='pool_padding must be at most'):
        ops.mbb_conv2d_int8_im2col_max_pool(*args)
    args[-1], args[-2] = [1, 1], [0, 2]
    with pytest.raises(RuntimeError, match='pool_stride must be'):
        ops.mbb_conv2d_int8_im2col_max_pool(*args)
    args[-2] = [2, 2]
    args[0] = x.clone()
    args[0][0, 2, 11, 11] = float('nan')  # read by the last conv row only
    with pytest.raises(RuntimeError, match='NaN'):
        ops.mbb_conv2d_int8_im2col_max_pool(*args)
