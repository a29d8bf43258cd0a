# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F

from mmbinary.ops import ext_loaded

pytestmark = pytest.mark.skipif(not ext_loaded(),
                                reason='needs the compiled extension')

CASES = [(24, 13, 17, 1, 1), (40, 9, 11, 2, 1), (96, 20, 33, 2, 1),
         (150, 7, 8, 1, 2), (5, 3, 4, 2, 1)]


@pytest.mark.parametrize('kernel', ['auto', 'avx2', 'generic'])
@pytest.mark.parametrize('channels,height,width,stride,dilation', CASES)
@pytest.mark.parametrize('signed', [False, True])
def test_depthwise_pack_matches_torch(monkeypatch, kernel, channels, height,
                                      width, stride, dilation, signed):
    if kernel == 'avx2' and _variant(kernel, monkeypatch) != kernel:
        pytest.skip('this CPU or build has no AVX2 depthwise kernel')
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    gen = torch.Generator().manual_seed(channels * 7 + stride)
    x = torch.randn(2, channels, height, width, generator=gen).contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, 3, 3, generator=gen)
    scale = torch.rand(channels, generator=gen) + 0.5
    bias = torch.randn(channels, generator=gen)
    ref = F.conv2d(x, weight, None, stride, dilation, dilation, channels)
    ref = (ref * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)).clamp(0, 6)
    out, words = torch.ops.mmbinary.depthwise_pack(
        x, weight, scale, bias, [stride] * 2, [dilation] * 2, [dilation] * 2,
        0.0, 6.0, True, 2, 0.5, signed)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    packed = torch.ops.mmbinary.mbb_quantize_pack(out, 2, 0.5, signed, 1)
    assert torch.equal(words, packed)


@pytest.mark.parametrize('kernel', ['auto', 'avx2', 'generic'])
def test_depthwise_pack_refuses_nan_words(monkeypatch, kernel):
    if kernel == 'avx2' and _variant(kernel, monkeypatch) != kernel:
        pytest.skip('this CPU or build has no AVX2 depthwise kernel')
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    x = torch.randn(1, 16, 5, 5)
    x[0, 3, 2, 2] = float('nan')
    weight = torch.randn(16, 1, 3, 3)
    ones, zeros = torch.ones(16), torch.zeros(16)
    out, _ = torch.ops.mmbinary.depthwise_pack(x, weight, ones, zeros, [1, 1],
                                               [1, 1], [1, 1], 0.0, 6.0, True,
                                               0, 1.0, False)
    assert bool(torch.isnan(out[0, 3, 1:4, 1:4]).all())
    with pytest.raises(RuntimeError, match='NaN'):
        torch.ops.mmbinary.depthwise_pack(x, weight, ones, zeros, [1, 1],
                                          [1, 1], [1, 1], 0.0, 6.0, False, 2,
                                          1.0, False)


def _depthwise_pack(kernel, monkeypatch, *args):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    return torch.ops.mmbinary.depthwise_pack(*args)


def _variant(kernel, monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    return torch.ops.mmbinary.depthwise_pack_variant()


@pytest.mark.parametrize('kernel, expected', [('generic', 'portable'),
                                              ('popcnt', 'portable')])
def test_depthwise_pack_variant_follows_the_kernel_setting(
        monkeypatch, kernel, expected):
    """MMBINARY_CPU_KERNEL picks the variant; 'auto' the best the CPU
    has."""
    assert _variant(kernel, monkeypatch) == expected
    assert _variant('auto', monkeypatch) in ('avx512', 'avx2', 'portable')
    if _variant('avx512', monkeypatch) == 'avx512':
        assert _variant('auto', monkeypatch) == 'avx512'


@pytest.mark.parametrize('seed', range(12))
@pytest.mark.parametrize('three_by_three', [False, True])
@pytest.mark.parametrize('variant', ['avx512', 'avx2'])
def test_depthwise_pack_vector_kernel_equals_portable(monkeypatch, seed,
                                                      three_by_three,
                                                      variant):
    """Each vector kernel (interior pixels in strips, a 3x3 kernel's
    interior rows channel block by channel block, border pixels one by one)
    gives the portable kernel's floats and words bit for bit, on random
    shapes, kernels, strides, paddings, dilations and bit widths."""
    if _variant(variant, monkeypatch) != variant:
        pytest.skip(f'this CPU or build has no {variant} depthwise kernel')
    gen = torch.Generator().manual_seed(seed)

    def pick(*values):
        return values[int(torch.randint(len(values), (1, ), generator=gen))]

    channels = pick(1, 5, 16, 24, 40, 64, 96, 150)
    kh, kw = (3, 3) if three_by_three else pick((3, 3), (5, 5), (1, 3),
                                                (3, 1), (2, 2))
    stride = (pick(1, 2), pick(1, 2))
    dilation = (pick(1, 1, 2), pick(1, 1, 2))
    padding = (pick(0, kh // 2, kh), pick(0, kw // 2, kw))
    height, width = pick(5, 9, 17), pick(7, 23, 41)
    bits, signed = pick(1, 2, 4, 8), pick(False, True)
    x = torch.randn(pick(1, 2), channels, height, width, generator=gen)
    x = x.contiguous(memory_format=torch.channels_last)
    args = (x, torch.randn(channels, 1, kh, kw, generator=gen),
            torch.rand(channels, generator=gen) + 0.5,
            torch.randn(channels, generator=gen), list(stride), list(padding),
            list(dilation), pick(0.0, -1.0), pick(6.0, float('inf')), True,
            bits, 0.37, signed)
    out, words = _depthwise_pack(variant, monkeypatch, *args)
    ref_out, ref_words = _depthwise_pack('generic', monkeypatch, *args)
    assert torch.equal(out, ref_out)
    assert torch.equal(words, ref_words)
    # the words alone (no float output) are the same words
    words_only = args[:9] + (False, ) + args[10:]
    _, alone = _depthwise_pack(variant, monkeypatch, *words_only)
    assert torch.equal(alone, ref_words)
