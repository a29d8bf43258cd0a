# Copyright (c) mmbinary contributors. All rights reserved.
"""The packed MBB conv ops against their pure-PyTorch references: packing
layout, fused quantize + pack, integer accumulators (bit exact), the float
epilogue (identical), every CPU kernel variant, argument checks, the
fallback without the extension, and CUDA against CPU where a GPU exists."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbinary.ops import (activation_codes_reference, build_info, ext_loaded,
                          mbb_conv2d, mbb_conv2d_accumulate,
                          mbb_conv2d_accumulate_reference,
                          mbb_conv2d_reference, num_group_words,
                          pack_activation_codes, pack_weight_codes,
                          quantize_pack, unpack_activation_words,
                          unpack_weight_words)


def cpu_kernels():
    """CPU kernel variants this build and CPU can run."""
    if not ext_loaded():
        return []
    runnable = []
    previous = os.environ.get('MMBINARY_CPU_KERNEL')
    try:
        for name in build_info()['compiled_cpu_kernels'].split(','):
            os.environ['MMBINARY_CPU_KERNEL'] = name
            try:
                quantize_pack(torch.zeros(1, 1, 1, 1), 1, 1.0, False)
            except RuntimeError as error:
                assert 'but this CPU' in str(error)
                continue
            runnable.append(name)
    finally:
        if previous is None:
            os.environ.pop('MMBINARY_CPU_KERNEL', None)
        else:
            os.environ['MMBINARY_CPU_KERNEL'] = previous
    return runnable


@pytest.fixture
def cpu_kernel(monkeypatch):
    """Sets MMBINARY_CPU_KERNEL for the test."""

    def use(name):
        monkeypatch.setenv('MMBINARY_CPU_KERNEL', name)

    return use


def random_weight_codes(shape, w_bits, generator):
    mmax = 2**w_bits - 1
    return torch.randint(0, mmax + 1, shape, generator=generator) * 2 - mmax


def random_act_codes(shape, a_bits, signed, generator):
    levels = 2**a_bits - 1
    q = torch.randint(0, levels + 1, shape, generator=generator)
    return 2 * q - levels if signed else q


def conv_case(n, cin, cout, size, kernel, stride, padding, dilation, groups,
              w_bits, a_bits, signed, seed):
    generator = torch.Generator().manual_seed(seed)
    act = random_act_codes((n, cin, *size), a_bits, signed, generator)
    weight = random_weight_codes((cout, cin // groups, *kernel), w_bits,
                                 generator)
    return act, weight


def packed_accumulate(act, weight, w_bits, a_bits, signed, stride, padding,
                      dilation, groups):
    return mbb_conv2d_accumulate(
        pack_activation_codes(act, a_bits, signed, groups),
        pack_weight_codes(weight, w_bits, groups), in_channels=act.shape[1],
        out_channels=weight.shape[0], w_bits=w_bits, a_bits=a_bits,
        signed=signed, kernel_size=weight.shape[2:], stride=stride,
        padding=padding, dilation=dilation, groups=groups)


# ---- packing layout ---------------------------------------------------------

@pytest.mark.parametrize('channels', [1, 63, 64, 65, 130])
def test_weight_layout(channels):
    """Plane m of word c // 64 holds bit m of n = (w + 2^M - 1) / 2 at bit
    c % 64; pad bits are zero."""
    codes = torch.full((2, channels, 1, 2), -3)  # n = 0
    c = channels - 1
    codes[1, c, 0, 1] = 1  # n = 2: plane 1 only
    words = pack_weight_codes(codes, 2)
    assert words.shape == (2, 2, 1, 2, num_group_words(channels))
    expected = torch.zeros_like(words)
    expected[1, 1, 0, 1, c // 64] = torch.tensor(1) << (c % 64)
    assert torch.equal(words, expected)
    assert torch.equal(unpack_weight_words(words, channels, 2), codes.int())


def test_activation_layout_and_groups():
    """(N, H, W, groups, K, Wg): each group starts at a word boundary."""
    codes = torch.zeros(1, 6, 1, 2, dtype=torch.int64)
    codes[0, 4, 0, 1] = 2  # group 1, channel 1 of the group: plane 1
    words = pack_activation_codes(codes, 2, signed=False, groups=2)
    assert words.shape == (1, 1, 2, 2, 2, 1)
    expected = torch.zeros_like(words)
    expected[0, 0, 1, 1, 1, 0] = 0b10
    assert torch.equal(words, expected)
    assert torch.equal(unpack_activation_words(words, 6, 2, False),
                       codes.int())


def test_signed_activation_codes_are_offset():
    """Signed codes a = 2q - L store q: -7, 7, 1 store q = 0, 7, 4."""
    codes = torch.tensor([-7, 7, 1]).view(1, 3, 1, 1)
    words = pack_activation_codes(codes, 3, signed=True)[0, 0, 0, 0, :, 0]
    # plane k holds bit k of q for channels 0, 1, 2 at bits 0, 1, 2
    assert torch.equal(words, torch.tensor([0b010, 0b010, 0b110]))
    assert torch.equal(
        unpack_activation_words(
            pack_activation_codes(codes, 3, True), 3, 3, True), codes.int())


def test_reference_codes_round_half_to_even():
    x = torch.tensor([-1.0, 0.5, 1.5, 2.5, 3.4, 9.0]).view(1, -1, 1, 1)
    unsigned = activation_codes_reference(x, 2, 1.0, signed=False)
    assert unsigned.flatten().tolist() == [0, 0, 2, 2, 3, 3]
    # signed, L = 3: q = round((x + 3) / 2): 1, 1.75, 2.25, 2.75, 3.2, 6
    signed = activation_codes_reference(x, 2, 1.0, signed=True)
    assert signed.flatten().tolist() == [-1, 1, 1, 3, 3, 3]


# ---- quantize + pack --------------------------------------------------------

def tie_inputs(a_bits, signed):
    """Values whose quantization hits exact .5 ties, and out-of-range
    values, as (1, C, 3, 5) with C = 70 (two words)."""
    levels = 2**a_bits - 1
    ties = torch.arange(-3, levels + 3, dtype=torch.float32) + 0.5
    if signed:  # (x + L) / 2 has a .5 fraction where x + L is odd
        ties = torch.arange(-levels - 4, levels + 4, dtype=torch.float32)
    extremes = torch.tensor([1e30, -1e30, float('inf'), -float('inf'), 0.0,
                             -0.0, 1e-30])
    values = torch.cat([ties, extremes, torch.randn(1050) * levels])
    return values[:70 * 15].view(1, 70, 3, 5)


@pytest.mark.ext
@pytest.mark.parametrize('signed', [False, True])
@pytest.mark.parametrize('a_bits', range(1, 9))
def test_quantize_pack_ties_and_range(a_bits, signed, cpu_kernel):
    torch.manual_seed(a_bits)
    x = tie_inputs(a_bits, signed)
    expected = pack_activation_codes(
        activation_codes_reference(x, a_bits, 1.0, signed), a_bits, signed)
    for kernel in cpu_kernels():
        cpu_kernel(kernel)
        assert torch.equal(quantize_pack(x, a_bits, 1.0, signed), expected)


@pytest.mark.ext
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 2),
    group_channels=st.integers(1, 140),
    groups=st.integers(1, 3),
    height=st.integers(1, 7),
    width=st.integers(1, 300),
    a_bits=st.integers(1, 8),
    signed=st.booleans(),
    inv_step=st.floats(0.015625, 64.0, width=32),
    seed=st.integers(0, 2**31 - 1))
def test_quantize_pack_equals_reference(n, group_channels, groups, height,
                                        width, a_bits, signed, inv_step,
                                        seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, group_channels * groups, height, width,
                    generator=generator) * 3
    words = quantize_pack(x, a_bits, inv_step, signed, groups)
    codes = activation_codes_reference(x, a_bits, inv_step, signed)
    assert torch.equal(words,
                       pack_activation_codes(codes, a_bits, signed, groups))
    assert torch.equal(
        unpack_activation_words(words, x.shape[1], a_bits, signed), codes)


# ---- accumulators -----------------------------------------------------------

@pytest.mark.ext
@pytest.mark.parametrize('channels', [1, 3, 63, 64, 65, 130])
@pytest.mark.parametrize('kernel', [(1, 1), (3, 3), (5, 5), (7, 7), (3, 5)])
def test_accumulate_channels_and_kernels(channels, kernel, cpu_kernel):
    act, weight = conv_case(2, channels, 6, (9, 8), kernel, 1,
                            (kernel[0] // 2 + 1, kernel[1] // 2), 1, 1, 2, 3,
                            True, channels)
    expected = mbb_conv2d_accumulate_reference(
        act, weight, 1, (kernel[0] // 2 + 1, kernel[1] // 2), 1, 1)
    for name in cpu_kernels():
        cpu_kernel(name)
        out = packed_accumulate(act, weight, 2, 3, True, 1,
                                (kernel[0] // 2 + 1, kernel[1] // 2), 1, 1)
        assert out.dtype == torch.int32
        assert torch.equal(out, expected), name


@pytest.mark.ext
@pytest.mark.parametrize('signed', [False, True])
def test_accumulate_all_bit_widths(signed):
    for w_bits in range(1, 9):
        for a_bits in range(1, 9):
            act, weight = conv_case(1, 67, 5, (5, 6), (3, 3), 1, 1, 1, 1,
                                    w_bits, a_bits, signed,
                                    w_bits * 10 + a_bits)
            expected = mbb_conv2d_accumulate_reference(act, weight, 1, 1)
            out = packed_accumulate(act, weight, w_bits, a_bits, signed, 1, 1,
                                    1, 1)
            assert torch.equal(out, expected), (w_bits, a_bits)


@pytest.mark.ext
@pytest.mark.parametrize(
    'cin,cout,groups,kernel,stride,padding,dilation,size',
    [
        (8, 8, 8, (3, 3), 1, 1, 1, (7, 9)),  # depthwise
        (12, 6, 3, (3, 3), 2, 1, 1, (8, 8)),  # grouped, strided
        (130, 130, 130, (5, 5), 1, 2, 1, (6, 6)),  # depthwise, wide
        (20, 8, 1, (3, 3), 1, 12, 12, (17, 19)),  # ASPP-like dilation
        (20, 8, 1, (3, 3), 1, 36, 36, (9, 9)),  # only the centre tap
        (16, 4, 2, (3, 3), (1, 2), (5, 0), (2, 1), (6, 11)),
        (5, 3, 1, (1, 1), 3, 4, 1, (4, 4)),  # padding > kernel: bias rows
        (4, 9, 1, (7, 7), 1, 3, 1, (1, 1)),  # 1 x 1 input
    ])
@pytest.mark.parametrize('signed', [False, True])
def test_accumulate_geometry(cin, cout, groups, kernel, stride, padding,
                             dilation, size, signed, cpu_kernel):
    act, weight = conv_case(2, cin, cout, size, kernel, stride, padding,
                            dilation, groups, 2, 2, signed, cin + cout)
    expected = mbb_conv2d_accumulate_reference(act, weight, stride, padding,
                                               dilation, groups)
    for name in cpu_kernels():
        cpu_kernel(name)
        out = packed_accumulate(act, weight, 2, 2, signed, stride, padding,
                                dilation, groups)
        assert torch.equal(out, expected), name


@st.composite
def conv_geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3, 'depthwise']))
    group_in = 1 if groups == 'depthwise' else draw(st.integers(1, 70))
    group_out = 1 if groups == 'depthwise' else draw(st.integers(1, 9))
    groups = draw(st.integers(1, 12)) if groups == 'depthwise' else groups
    kernel = (draw(st.sampled_from([1, 2, 3, 5, 7])),
              draw(st.sampled_from([1, 3, 5, 7])))
    dilation = (draw(st.sampled_from([1, 1, 2, 3, 12])),
                draw(st.sampled_from([1, 1, 2, 12])))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = (draw(st.integers(1, 14)), draw(st.integers(1, 14)))
    padding = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        low = max(0, -(-(span - size[axis]) // 2))  # output >= 1
        padding.append(draw(st.integers(low, low + 4)))
    return dict(n=draw(st.integers(1, 2)), cin=group_in * groups,
                cout=group_out * groups, groups=groups, kernel=kernel,
                stride=stride, padding=tuple(padding), dilation=dilation,
                size=size)


@pytest.mark.ext
@settings(max_examples=60, deadline=None)
@given(geometry=conv_geometries(), w_bits=st.integers(1, 8),
       a_bits=st.integers(1, 8), signed=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_accumulate_equals_reference(geometry, w_bits, a_bits, signed, seed):
    g = geometry
    act, weight = conv_case(g['n'], g['cin'], g['cout'], g['size'],
                            g['kernel'], g['stride'], g['padding'],
                            g['dilation'], g['groups'], w_bits, a_bits, signed,
                            seed)
    expected = mbb_conv2d_accumulate_reference(act, weight, g['stride'],
                                               g['padding'], g['dilation'],
                                               g['groups'])
    for name in cpu_kernels():
        os.environ['MMBINARY_CPU_KERNEL'] = name
        try:
            out = packed_accumulate(act, weight, w_bits, a_bits, signed,
                                    g['stride'], g['padding'], g['dilation'],
                                    g['groups'])
        finally:
            del os.environ['MMBINARY_CPU_KERNEL']
        assert torch.equal(out, expected), name


# ---- fused op and epilogue --------------------------------------------------

def fused_case(seed, cin=70, cout=10, groups=1, kernel=(3, 3), w_bits=2,
               a_bits=3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, 11, 13, generator=generator) * 2
    weight = random_weight_codes((cout, cin // groups, *kernel), w_bits,
                                 generator)
    scale = torch.rand(cout, generator=generator) * 0.01 + 1e-4
    bias = torch.randn(cout, generator=generator)
    return x, weight, scale, bias


@pytest.mark.ext
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), w_bits=st.integers(1, 8),
       a_bits=st.integers(1, 8), signed=st.booleans(),
       groups=st.sampled_from([1, 2, 10]), stride=st.integers(1, 2),
       padding=st.integers(0, 4), dilation=st.sampled_from([1, 2, 3]),
       inv_step=st.floats(0.125, 32.0, width=32))
def test_fused_equals_reference(seed, w_bits, a_bits, signed, groups, stride,
                                padding, dilation, inv_step):
    x, weight, scale, bias = fused_case(seed, groups=groups, w_bits=w_bits,
                                        a_bits=a_bits)
    params = dict(a_bits=a_bits, inv_step=inv_step, signed=signed,
                  stride=stride, padding=padding, dilation=dilation,
                  groups=groups)
    expected = mbb_conv2d_reference(x, weight, scale, bias, **params)
    for name in cpu_kernels():
        os.environ['MMBINARY_CPU_KERNEL'] = name
        try:
            out = mbb_conv2d(x, pack_weight_codes(weight, w_bits, groups),
                             scale, bias, in_channels=x.shape[1],
                             w_bits=w_bits, kernel_size=weight.shape[2:],
                             **params)
        finally:
            del os.environ['MMBINARY_CPU_KERNEL']
        assert out.dtype == torch.float32
        assert torch.equal(out, expected), name


@pytest.mark.parametrize('signed', [False, True])
def test_reference_close_to_float64_conv(signed):
    """The float epilogue only rounds: compare with a float64 convolution of
    the dequantized values."""
    x, weight, scale, bias = fused_case(3)
    out = mbb_conv2d_reference(x, weight, scale, bias, a_bits=3,
                               inv_step=2.0, signed=signed, padding=1)
    codes = activation_codes_reference(x, 3, 2.0, signed).double()
    exact = F.conv2d(codes, weight.double(), padding=1)
    exact = exact * scale.double().view(1, -1, 1, 1) + bias.double().view(
        1, -1, 1, 1)
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.ext
@pytest.mark.parametrize('signed', [False, True])
def test_fused_op_close_to_float64_conv(signed):
    x, weight, scale, bias = fused_case(4, cin=130, cout=12, groups=2)
    out = mbb_conv2d(x, pack_weight_codes(weight, 2, 2), scale, bias,
                     in_channels=130, w_bits=2, a_bits=3, inv_step=2.0,
                     signed=signed, kernel_size=3, padding=1, groups=2)
    codes = activation_codes_reference(x, 3, 2.0, signed).double()
    exact = F.conv2d(codes, weight.double(), padding=1, groups=2)
    exact = exact * scale.double().view(1, -1, 1, 1) + bias.double().view(
        1, -1, 1, 1)
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('signed', [False, True])
def test_reference_propagates_nan_like_a_float_conv(signed):
    """As the op: a NaN input has level 0, and every output whose valid
    taps read it (in its group) is NaN."""
    x, weight, scale, bias = fused_case(10, cin=8, cout=6, groups=2)
    x[0, 1, 4, 5] = float('nan')
    x[1, 6, 0, 12] = float('nan')
    params = dict(a_bits=2, inv_step=1.0, signed=signed, padding=2,
                  dilation=2, groups=2)
    out = mbb_conv2d_reference(x, weight, scale, bias, **params)
    expected = F.conv2d(x, weight.float(), padding=2, dilation=2, groups=2)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), expected.isnan())
    codes = activation_codes_reference(x, 2, 1.0, signed)
    assert codes[0, 1, 4, 5] == (-3 if signed else 0)
    clean = x.nan_to_num(0.0) if not signed else x.nan_to_num(-10.0)
    finite = ~out.isnan()
    assert torch.equal(
        out[finite],
        mbb_conv2d_reference(clean, weight, scale, bias, **params)[finite])
    if ext_loaded():
        words = pack_weight_codes(weight, 2, 2)
        compiled = mbb_conv2d(x, words, scale, bias, in_channels=8,
                              w_bits=2, kernel_size=3, **params)
        assert torch.equal(compiled.isnan(), out.isnan())
        assert torch.equal(compiled[finite], out[finite])


@pytest.mark.ext
def test_kernel_variants_identical(cpu_kernel):
    """Every CPU variant gives the same floats on a ResNet-like layer."""
    x, weight, scale, bias = fused_case(5, cin=64, cout=16, w_bits=1,
                                        a_bits=1)
    words = pack_weight_codes(weight, 1)
    outputs = []
    for name in cpu_kernels():
        cpu_kernel(name)
        outputs.append(
            mbb_conv2d(x, words, scale, bias, in_channels=64, w_bits=1,
                       a_bits=1, inv_step=1.0, signed=False, kernel_size=3,
                       padding=1))
    assert len(outputs) >= 1
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


@pytest.mark.ext
def test_empty_batch():
    x = torch.zeros(0, 4, 5, 5)
    words = pack_weight_codes(torch.ones(3, 4, 3, 3), 1)
    out = mbb_conv2d(x, words, torch.ones(3), torch.zeros(3), in_channels=4,
                     w_bits=1, a_bits=2, inv_step=1.0, signed=False,
                     kernel_size=3, padding=1)
    assert out.shape == (0, 3, 5, 5)


@pytest.mark.ext
def test_ops_trace_with_fake_tensors():
    """register_fake gives torch.compile the output shapes and dtypes."""
    x, weight, scale, bias = fused_case(6, cin=8, cout=4)
    act = quantize_pack(x, 3, 1.0, True)
    words = pack_weight_codes(weight, 2)
    ops = torch.ops.mmbinary
    torch.library.opcheck(ops.mbb_quantize_pack.default, (x, 3, 1.0, True, 1))
    torch.library.opcheck(
        ops.mbb_conv2d_accumulate.default,
        (act, words, 8, 4, 2, 3, True, [3, 3], [2, 1], [1, 1], [1, 2], 1))
    torch.library.opcheck(
        ops.mbb_conv2d.default,
        (x, words, scale, bias, 8, 2, 3, 1.0, True, [3, 3], [1, 1], [1, 1],
         [1, 1], 1))
    lanes = ops.mbb_lane_prepare_weight(words, 8, 2, [3, 3])
    torch.library.opcheck(ops.mbb_lane_prepare_weight.default,
                          (words, 8, 2, [3, 3]))
    torch.library.opcheck(
        ops.mbb_conv2d_words.default,
        (act, words, scale, bias, 8, 2, 3, True, [3, 3], [1, 1], [1, 1],
         [1, 1], 1, None, 0.0, math.inf, True, 2, 1.0, False, lanes))


# ---- argument checks --------------------------------------------------------

def default_args():
    x, weight, scale, bias = fused_case(7, cin=6, cout=4, w_bits=2, a_bits=2)
    return x, pack_weight_codes(weight, 2), scale, bias


def call_fused(x, words, scale, bias, **overrides):
    params = dict(in_channels=6, w_bits=2, a_bits=2, inv_step=1.0,
                  signed=False, kernel_size=3, padding=1)
    params.update(overrides)
    return mbb_conv2d(x, words, scale, bias, **params)


@pytest.mark.parametrize('name', ['w_bits', 'a_bits'])
@pytest.mark.parametrize('bits', [0, 9, 2.5, True, '2'])
def test_bad_bits(name, bits):
    x, words, scale, bias = default_args()
    with pytest.raises(ValueError, match=f'{name} must be an integer in 1..8'):
        call_fused(x, words, scale, bias, **{name: bits})
    with pytest.raises(ValueError, match='a_bits must be an integer in 1..8'):
        quantize_pack(x, bits, 1.0, False)


@pytest.mark.parametrize('inv_step', [0.0, -1.0, float('nan'), float('inf'),
                                      1e-50])
def test_bad_inv_step(inv_step):
    x, words, scale, bias = default_args()
    with pytest.raises(ValueError, match='inv_step must be a finite number'):
        call_fused(x, words, scale, bias, inv_step=inv_step)
    with pytest.raises(ValueError, match='inv_step'):
        activation_codes_reference(x, 2, inv_step, False)


#: The compiled ops' C++ checks raise RuntimeError; without the extension
#: the references raise ValueError with the same message.
OP_ERROR = (RuntimeError, ValueError)


def test_bad_geometry_and_channels():
    x, words, scale, bias = default_args()
    with pytest.raises(OP_ERROR, match='input has 6 channels, expected '
                       'in_channels=5'):
        call_fused(x, pack_weight_codes(torch.ones(4, 5, 3, 3), 2), scale,
                   bias, in_channels=5)
    with pytest.raises(OP_ERROR, match='weight_words must have shape '
                       r'\(out_channels, w_bits'):
        call_fused(x, words[:, :1], scale, bias)
    with pytest.raises(OP_ERROR, match='in_channels .* divisible by groups'):
        call_fused(x, words, scale, bias, groups=4)
    with pytest.raises(ValueError, match='stride must be >= 1'):
        call_fused(x, words, scale, bias, stride=0)
    with pytest.raises(OP_ERROR, match='too small'):
        call_fused(x, words, scale, bias, padding=0, dilation=12)
    with pytest.raises(OP_ERROR, match='out_bias must be a float32'):
        call_fused(x, words, scale, bias[:2])
    with pytest.raises(ValueError, match='weight_words is on meta'):
        call_fused(x, words.to('meta'), scale, bias)
    with pytest.raises(ValueError, match='odd integers'):
        pack_weight_codes(torch.zeros(2, 3, 1, 1), 2)
    with pytest.raises(ValueError, match=r'activation codes must lie in'):
        pack_activation_codes(torch.full((1, 2, 1, 1), 4), 2, False)


def test_accumulator_overflow_is_refused():
    with pytest.raises(OP_ERROR, match='int32 accumulator could overflow'):
        mbb_conv2d_accumulate(
            torch.zeros(1, 7, 7, 1, 8, 64, dtype=torch.int64),
            torch.zeros(4, 8, 7, 7, 64, dtype=torch.int64),
            in_channels=4096, out_channels=4, w_bits=8, a_bits=8,
            signed=False, kernel_size=7, padding=3)


@pytest.mark.ext
def test_op_checks_name_the_argument():
    """The C++ checks, reached through torch.ops directly."""
    x, words, scale, bias = default_args()
    ops = torch.ops.mmbinary
    conv = (6, 2, 2, 1.0, False, [3, 3], [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match='input must be a float32 tensor'):
        ops.mbb_conv2d(x.double(), words, scale, bias, *conv)
    with pytest.raises(RuntimeError, match='input must be contiguous'):
        ops.mbb_conv2d(x.transpose(2, 3), words, scale, bias, *conv)
    with pytest.raises(RuntimeError, match='input has 6 channels, expected '
                       'in_channels=5'):
        ops.mbb_conv2d(x, words, scale, bias, 5, *conv[1:])
    with pytest.raises(RuntimeError, match='weight_words must be contiguous'):
        ops.mbb_conv2d(x, words.transpose(2, 3), scale, bias, *conv)
    with pytest.raises(RuntimeError,
                       match='w_bits must be an integer in 1..8'):
        ops.mbb_conv2d(x, words, scale, bias, 6, 9, *conv[2:])
    with pytest.raises(RuntimeError, match='inv_step must be a finite'):
        ops.mbb_conv2d(x, words, scale, bias, 6, 2, 2, -1.0, *conv[4:])
    with pytest.raises(RuntimeError, match='out_scale must be a float32'):
        ops.mbb_conv2d(x, words, scale.double(), bias, *conv)
    with pytest.raises(RuntimeError, match='int32 accumulator could overflow'):
        ops.mbb_conv2d(x, words, scale, bias, 4096, 8, 8, 1.0, False, [7, 7],
                       [1, 1], [1, 1], [1, 1], 1)
    act = quantize_pack(x, 2, 1.0, False)
    acc = (6, 4, 2, 2, False, [3, 3], [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match='act_words must be contiguous'):
        ops.mbb_conv2d_accumulate(act.transpose(1, 2), words, *acc)
    with pytest.raises(RuntimeError, match='act_words must be an int64'):
        ops.mbb_conv2d_accumulate(act.int(), words, *acc)
    with pytest.raises(RuntimeError, match=r'act_words must have shape'):
        ops.mbb_conv2d_accumulate(act, words, 6, 4, 2, 3, *acc[4:])
    with pytest.raises(RuntimeError, match='weight_words must have shape'):
        ops.mbb_conv2d_accumulate(act, words, 6, 8, *acc[2:])
    with pytest.raises(RuntimeError, match='groups must be >= 1'):
        ops.mbb_quantize_pack(x, 2, 1.0, False, 0)
    with pytest.raises(RuntimeError, match='input must be a float32'):
        ops.mbb_quantize_pack(x.half(), 2, 1.0, False, 1)


@pytest.mark.ext
def test_bad_kernel_name(monkeypatch):
    x, words, scale, bias = default_args()
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', 'sse9')
    with pytest.raises(RuntimeError, match='MMBINARY_CPU_KERNEL must be one '
                       'of auto, generic, popcnt, avx2, avx512'):
        call_fused(x, words, scale, bias)


# ---- fallback without the extension -----------------------------------------

def test_fallback_without_extension_is_identical(tmp_path):
    """With mmbinary._C hidden, the ops run the pure-PyTorch reference and
    give what the compiled ops give."""
    x, weight, scale, bias = fused_case(8, cin=66, cout=5, groups=1)
    data = tmp_path / 'case.pt'
    torch.save(dict(x=x, weight=weight, scale=scale, bias=bias), data)
    script = textwrap.dedent(f"""
        import sys, warnings
        class HideExtension:
            def find_spec(self, name, path=None, target=None):
                if name == 'mmbinary._C':
                    raise ImportError('hidden by the test')
        sys.meta_path.insert(0, HideExtension())
        import torch
        from mmbinary.ops import (ext_loaded, mbb_conv2d,
                                  mbb_conv2d_accumulate, pack_weight_codes,
                                  quantize_pack)
        assert not ext_loaded()
        case = torch.load({str(data)!r})
        words = pack_weight_codes(case['weight'], 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            out = mbb_conv2d(case['x'], words, case['scale'], case['bias'],
                             in_channels=66, w_bits=3, a_bits=2,
                             inv_step=1.5, signed=True, kernel_size=3,
                             padding=2, dilation=2)
            act = quantize_pack(case['x'], 2, 1.5, True)
            acc = mbb_conv2d_accumulate(
                act, words, in_channels=66, out_channels=5, w_bits=3,
                a_bits=2, signed=True, kernel_size=3, padding=2, dilation=2)
        assert any('pure-PyTorch reference' in str(w.message)
                   for w in caught)
        torch.save(dict(out=out, act=act, acc=acc), {str(data)!r})
        print('FALLBACK')
    """)
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'FALLBACK' in result.stdout
    fallback = torch.load(data)
    codes = activation_codes_reference(x, 2, 1.5, True)
    expected_acc = mbb_conv2d_accumulate_reference(codes, weight, 1, 2, 2)
    assert torch.equal(fallback['acc'], expected_acc)
    assert torch.equal(fallback['act'],
                       pack_activation_codes(codes, 2, True))
    expected = mbb_conv2d_reference(x, weight, scale, bias, a_bits=2,
                                    inv_step=1.5, signed=True, padding=2,
                                    dilation=2)
    assert torch.equal(fallback['out'], expected)
    if ext_loaded():
        compiled = mbb_conv2d(x, pack_weight_codes(weight, 3), scale, bias,
                              in_channels=66, w_bits=3, a_bits=2,
                              inv_step=1.5, signed=True, kernel_size=3,
                              padding=2, dilation=2)
        assert torch.equal(compiled, fallback['out'])


# ---- CUDA -------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize('signed', [False, True])
@pytest.mark.parametrize(
    'cin,cout,groups,kernel,stride,padding,dilation',
    [(70, 9, 1, (3, 3), 1, 1, 1), (12, 12, 12, (3, 3), 2, 1, 1),
     (130, 8, 2, (1, 1), 1, 0, 1), (20, 6, 1, (3, 3), 1, 12, 12),
     (9, 6, 3, (5, 3), (2, 1), (3, 0), (1, 2))])
def test_cuda_equals_cpu(cin, cout, groups, kernel, stride, padding,
                         dilation, signed):
    x, weight, scale, bias = fused_case(9, cin=cin, cout=cout, groups=groups,
                                        kernel=kernel, w_bits=3, a_bits=2)
    words = pack_weight_codes(weight, 3, groups)
    params = dict(in_channels=cin, w_bits=3, a_bits=2, inv_step=1.25,
                  signed=signed, kernel_size=kernel, stride=stride,
                  padding=padding, dilation=dilation, groups=groups)
    act = quantize_pack(x, 2, 1.25, signed, groups)
    act_cuda = quantize_pack(x.cuda(), 2, 1.25, signed, groups)
    assert act_cuda.is_cuda and torch.equal(act_cuda.cpu(), act)
    acc_params = {k: v for k, v in params.items() if k != 'inv_step'}
    acc_params['out_channels'] = cout
    acc = mbb_conv2d_accumulate(act, words, **acc_params)
    acc_cuda = mbb_conv2d_accumulate(act_cuda, words.cuda(), **acc_params)
    assert torch.equal(acc_cuda.cpu(), acc)
    out = mbb_conv2d(x, words, scale, bias, **params)
    out_cuda = mbb_conv2d(x.cuda(), words.cuda(), scale.cuda(), bias.cuda(),
                          **params)
    assert torch.equal(out_cuda.cpu(), out)
