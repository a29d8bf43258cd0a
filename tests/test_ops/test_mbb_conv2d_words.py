# Copyright (c) mmbinary contributors. All rights reserved.
"""The channel-lane CPU kernel and ``mbb_conv2d_words`` (packed activations
in, float32 or the next layer's activation words out) against the
references, on every CPU kernel variant this machine runs: random
geometries, bit widths, activation modes and layouts, bit for bit."""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmbinary.ops import (activation_codes_reference, build_info, ext_loaded,
                          mbb_conv2d_accumulate_reference,
                          mbb_conv2d_reference, pack_activation_codes,
                          pack_weight_codes)

pytestmark = pytest.mark.ext


def runnable_kernels():
    if not ext_loaded():
        return []
    names, previous = [], os.environ.get('MMBINARY_CPU_KERNEL')
    try:
        for name in build_info()['compiled_cpu_kernels'].split(','):
            os.environ['MMBINARY_CPU_KERNEL'] = name
            try:
                torch.ops.mmbinary.mbb_quantize_pack(
                    torch.zeros(1, 1, 1, 1), 1, 1.0, False, 1)
            except RuntimeError:
                continue
            names.append(name)
    finally:
        os.environ.pop('MMBINARY_CPU_KERNEL', None)
        if previous is not None:
            os.environ['MMBINARY_CPU_KERNEL'] = previous
    return names


KERNELS = runnable_kernels()
#: (act_min, act_max) -> the torch activation it stands for.
ACTIVATIONS = {
    (-math.inf, math.inf): lambda x: x,
    (0.0, math.inf): torch.relu,
    (0.0, 6.0): torch.nn.functional.relu6,
    (-1.5, 2.0): lambda x: torch.clamp(x, -1.5, 2.0),
}


@st.composite
def conv_cases(draw):
    kernel = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (5, 5), (7, 7)]))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    size = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1 - 2 * padding[axis]
        size.append(draw(st.integers(max(1, span), max(1, span) + 9)))
    return dict(
        n=draw(st.integers(1, 2)),
        cin=draw(st.sampled_from([1, 3, 16, 63, 64, 65, 130, 200])),
        cout=draw(st.sampled_from([1, 5, 8, 9, 16, 17, 33, 64, 70])),
        size=tuple(size), kernel=kernel, stride=stride, padding=padding,
        dilation=dilation, w_bits=draw(st.integers(1, 4)),
        a_bits=draw(st.integers(1, 4)), signed=draw(st.booleans()),
        channels_last=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def make_case(c):
    g = torch.Generator().manual_seed(c['seed'])
    mmax = 2**c['w_bits'] - 1
    weight = torch.randint(0, mmax + 1, (c['cout'], c['cin'], *c['kernel']),
                           generator=g) * 2 - mmax
    x = torch.randn(c['n'], c['cin'], *c['size'], generator=g) * 2
    if c['channels_last']:
        x = x.contiguous(memory_format=torch.channels_last)
    scale = torch.randn(c['cout'], generator=g)
    bias = torch.randn(c['cout'], generator=g)
    inv = float(torch.tensor(0.3 + 2 * torch.rand(1, generator=g).item(),
                             dtype=torch.float32))
    return x, weight, scale, bias, inv


@pytest.mark.skipif(not KERNELS, reason='no CPU kernel runs here')
@pytest.mark.parametrize('kernel', KERNELS)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases())
def test_conv_equals_reference(kernel, case, monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    x, weight, scale, bias, inv = make_case(case)
    geometry = (case['kernel'], case['stride'], case['padding'],
                case['dilation'], 1)
    words = pack_weight_codes(weight, case['w_bits'])
    got = torch.ops.mmbinary.mbb_conv2d(x, words, scale, bias, case['cin'],
                                        case['w_bits'], case['a_bits'], inv,
                                        case['signed'], *geometry)
    expected = mbb_conv2d_reference(
        x, weight, scale, bias, a_bits=case['a_bits'], inv_step=inv,
        signed=case['signed'], stride=case['stride'],
        padding=case['padding'], dilation=case['dilation'])
    assert torch.equal(got, expected)
    codes = activation_codes_reference(x, case['a_bits'], inv,
                                       case['signed'])
    act = pack_activation_codes(codes, case['a_bits'], case['signed'])
    assert torch.equal(
        torch.ops.mmbinary.mbb_quantize_pack(x, case['a_bits'], inv,
                                             case['signed'], 1), act)
    acc = torch.ops.mmbinary.mbb_conv2d_accumulate(
        act, words, case['cin'], case['cout'], case['w_bits'],
        case['a_bits'], case['signed'], *geometry)
    assert torch.equal(
        acc,
        mbb_conv2d_accumulate_reference(codes, weight, case['stride'],
                                        case['padding'], case['dilation']))


@pytest.mark.skipif(not KERNELS, reason='no CPU kernel runs here')
@pytest.mark.parametrize('kernel', KERNELS)
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases(), act=st.sampled_from(list(ACTIVATIONS)),
       with_residual=st.booleans(), next_bits=st.integers(1, 4),
       next_signed=st.booleans())
def test_words_op_equals_float_then_pack(kernel, case, act, with_residual,
                                         next_bits, next_signed,
                                         monkeypatch):
    """conv -> epilogue (+ residual) (-> relu) -> the next layer's quantize
    + pack, fused, gives the float output and the words the unfused path
    computes."""
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    x, weight, scale, bias, inv = make_case(case)
    geometry = (case['kernel'], case['stride'], case['padding'],
                case['dilation'], 1)
    words = pack_weight_codes(weight, case['w_bits'])
    codes = activation_codes_reference(x, case['a_bits'], inv,
                                       case['signed'])
    packed_act = pack_activation_codes(codes, case['a_bits'],
                                       case['signed'])
    acc = mbb_conv2d_accumulate_reference(codes, weight, case['stride'],
                                          case['padding'], case['dilation'])
    out = acc.float() * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    residual = None
    if with_residual:
        residual = torch.randn(out.shape)  # NCHW: the op takes any layout
        out = out + residual
    out = ACTIVATIONS[act](out)
    args = (packed_act, words, scale, bias, case['cin'], case['w_bits'],
            case['a_bits'], case['signed'], *geometry, residual, *act)
    got, none = torch.ops.mmbinary.mbb_conv2d_words(*args, True, 0, 1.0,
                                                    False)
    assert torch.equal(got, out) and none.numel() == 0
    next_inv = float(torch.tensor(1.7, dtype=torch.float32))
    expected = pack_activation_codes(
        activation_codes_reference(out, next_bits, next_inv, next_signed),
        next_bits, next_signed)
    # the weights laid out once (as packed layers cache them) or per call
    lanes = torch.ops.mmbinary.mbb_lane_prepare_weight(
        words, case['cin'], case['w_bits'], case['kernel'])
    assert lanes.numel() == 0 or kernel == 'avx512'
    for float_out in (False, True):
        for prepared in (None, lanes):
            got, got_words = torch.ops.mmbinary.mbb_conv2d_words(
                *args, float_out, next_bits, next_inv, next_signed, prepared)
            assert torch.equal(got_words, expected)
            assert torch.equal(got, out) if float_out else got.numel() == 0


def test_words_op_checks_its_arguments():
    words = pack_weight_codes(torch.ones(4, 8, 1, 1, dtype=torch.int32), 1)
    act = pack_activation_codes(torch.zeros(1, 8, 3, 3, dtype=torch.int32),
                                1, False)
    scale, bias = torch.ones(4), torch.zeros(4)
    geometry = (8, 1, 1, False, (1, 1), (1, 1), (0, 0), (1, 1), 1)
    op = torch.ops.mmbinary.mbb_conv2d_words
    with pytest.raises(RuntimeError, match='out_a_bits must be 0'):
        op(act, words, scale, bias, *geometry, None, 0.0, math.inf, True, 9,
           1.0, False)
    with pytest.raises(RuntimeError, match='inv_step must be a finite'):
        op(act, words, scale, bias, *geometry, None, 0.0, math.inf, True, 2,
           -1.0, False)
    with pytest.raises(RuntimeError, match='ask for float_out, words'):
        op(act, words, scale, bias, *geometry, None, 0.0, math.inf, False, 0,
           1.0, False)
    with pytest.raises(RuntimeError, match='out_bias must be a float32'):
        op(act, words, scale, torch.zeros(3), *geometry, None, 0.0, math.inf,
           True, 0, 1.0, False)
    with pytest.raises(RuntimeError, match='residual must be a float32'):
        op(act, words, scale, bias, *geometry, torch.zeros(1, 4, 2, 3), 0.0,
           math.inf, True, 0, 1.0, False)
    with pytest.raises(RuntimeError, match='act_min <= act_max'):
        op(act, words, scale, bias, *geometry, None, 6.0, 0.0, True, 0, 1.0,
           False)


@pytest.mark.skipif('avx512' not in KERNELS, reason='no AVX-512 kernel')
def test_prepared_lane_weights_are_checked(monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', 'avx512')
    words = pack_weight_codes(
        torch.ones(20, 70, 3, 3, dtype=torch.int32), 2)
    act = pack_activation_codes(torch.zeros(1, 70, 5, 5, dtype=torch.int32),
                                1, False)
    ops = torch.ops.mmbinary
    lanes = ops.mbb_lane_prepare_weight(words, 70, 2, [3, 3])
    # 24 lane channels (3 blocks of 8) x 2 planes x 9 taps x 2 words
    assert lanes.shape == (24 * 2 * 9 * 2, ) and lanes.dtype == torch.int64
    args = (act, words, torch.ones(20), torch.zeros(20), 70, 2, 1, False,
            (3, 3), (1, 1), (1, 1), (1, 1), 1, None, 0.0, math.inf, True, 0,
            1.0, False)
    with pytest.raises(RuntimeError, match='weight_lanes must be'):
        ops.mbb_conv2d_words(*args, lanes[:-1])
    with pytest.raises(RuntimeError, match='weight_words must be a'):
        ops.mbb_lane_prepare_weight(words, 70, 1, [3, 3])
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', 'avx2')
    assert ops.mbb_lane_prepare_weight(words, 70, 2, [3, 3]).numel() == 0


def test_lane_kernel_output_is_channels_last(monkeypatch):
    """On AVX-512 the kernel writes (N, Ho, Wo, O) memory; the values are
    the same whatever the layout."""
    if 'avx512' not in KERNELS:
        pytest.skip('no AVX-512 VPOPCNTDQ kernel on this CPU')
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', 'avx512')
    weight = torch.ones(16, 8, 3, 3, dtype=torch.int32)
    out = torch.ops.mmbinary.mbb_conv2d(
        torch.rand(1, 8, 5, 6), pack_weight_codes(weight, 1),
        torch.ones(16), torch.zeros(16), 8, 1, 1, 1.0, False, (3, 3), (1, 1),
        (1, 1), (1, 1), 1)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('next_bits', [1, 2, 3])
@pytest.mark.parametrize('next_signed', [False, True])
@pytest.mark.parametrize('act', list(ACTIVATIONS))
def test_words_at_every_accumulator_edge(next_bits, next_signed, act):
    """Scales of both signs, zero and tiny, and biases that put the level
    steps at the accumulator's ends: the words equal the float path's (the
    1- and 2-bit words come from integer thresholds on AVX-512)."""
    cin, cout = 16, 24
    g = torch.Generator().manual_seed(next_bits)
    weight = torch.randint(0, 2, (cout, cin, 3, 3), generator=g) * 2 - 1
    act_codes = torch.randint(0, 2, (1, cin, 6, 7), generator=g)
    scale = torch.tensor([1.0, -1.0, 0.0, -0.0, 1e-9, -1e-9, 0.25, -0.25] * 3)
    bias = torch.tensor([0.0, 0.5, -0.5, 3.0, -3.0, 144.0, -144.0, 0.49] * 3)
    packed_act = pack_activation_codes(act_codes, 1, False)
    acc = mbb_conv2d_accumulate_reference(act_codes, weight, 1, 1, 1)
    out = acc.float() * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    out = ACTIVATIONS[act](out)
    inv = 0.75
    expected = pack_activation_codes(
        activation_codes_reference(out, next_bits, inv, next_signed),
        next_bits, next_signed)
    _, words = torch.ops.mmbinary.mbb_conv2d_words(
        packed_act, pack_weight_codes(
            weight, 1), scale, bias, cin, 1, 1, False,
        (3, 3), (1, 1), (1, 1), (1, 1), 1, None, *act, False, next_bits, inv,
        next_signed)
    assert torch.equal(words, expected)


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('groups,channels', [(1, 70), (2, 130), (3, 24),
                                             (8, 8)])
@pytest.mark.parametrize('signed', [False, True])
def test_channels_last_packing_equals_nchw(kernel, groups, channels, signed,
                                           monkeypatch):
    """The pixel-by-pixel packers (channels-last input) give the words of
    the NCHW packers, with groups, and the same convolution."""
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 5, 7, generator=g) * 3
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for bits in (1, 3, 8):
        assert torch.equal(
            torch.ops.mmbinary.mbb_quantize_pack(x_cl, bits, 1.3, signed,
                                                 groups),
            torch.ops.mmbinary.mbb_quantize_pack(x, bits, 1.3, signed,
                                                 groups))
    codes = torch.randint(0, 4, (groups * 2, channels // groups, 3, 3),
                          generator=g) * 2 - 3
    words = pack_weight_codes(codes, 2, groups)
    args = (words, torch.ones(groups * 2), torch.zeros(groups * 2), channels,
            2, 2, 1.3, signed, (3, 3), (1, 1), (1, 1), (1, 1), groups)
    assert torch.equal(torch.ops.mmbinary.mbb_conv2d(x_cl, *args),
                       torch.ops.mmbinary.mbb_conv2d(x, *args))


@pytest.mark.skipif('avx512' not in KERNELS, reason='no AVX-512 kernel')
@pytest.mark.parametrize('cin', [64, 100, 128, 256])
@pytest.mark.parametrize('bits', [(1, 1), (1, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize('kernel_size', [1, 3])
@pytest.mark.parametrize('stride', [(1, 1), (2, 1)])
def test_lane_kernel_word_count_specialisations(cin, bits, kernel_size,
                                                stride, monkeypatch):
    """Layers with 1, 2 or 4 words per plane at row stride 1 run code with
    the word count fixed at compile time: accumulators, float outputs and
    threshold-made words equal the references."""
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', 'avx512')
    w_bits, a_bits = bits
    case = dict(n=1, cin=cin, cout=40, size=(5, 19), kernel=(kernel_size, ) *
                2, stride=stride, padding=(kernel_size // 2, ) * 2,
                dilation=(1, 1), w_bits=w_bits, a_bits=a_bits, signed=False,
                channels_last=True, seed=cin + 10 * kernel_size + w_bits)
    x, weight, scale, bias, inv = make_case(case)
    geometry = (case['kernel'], stride, case['padding'], (1, 1), 1)
    words = pack_weight_codes(weight, w_bits)
    codes = activation_codes_reference(x, a_bits, inv, False)
    act = pack_activation_codes(codes, a_bits, False)
    ops = torch.ops.mmbinary
    acc = ops.mbb_conv2d_accumulate(act, words, cin, 40, w_bits, a_bits,
                                    False, *geometry)
    expected_acc = mbb_conv2d_accumulate_reference(codes, weight, stride,
                                                   case['padding'], (1, 1))
    assert torch.equal(acc, expected_acc)
    expected = torch.relu(
        mbb_conv2d_reference(x, weight, scale, bias, a_bits=a_bits,
                             inv_step=inv, signed=False, stride=stride,
                             padding=case['padding'], dilation=(1, 1)))
    for next_bits in (1, 2):
        out, next_words = ops.mbb_conv2d_words(
            act, words, scale, bias, cin, w_bits, a_bits, False,
            *geometry[:-1], 1, None, 0.0, math.inf, False, next_bits, 1.3,
            False)
        assert out.numel() == 0
        assert torch.equal(next_words,
                           ops.mbb_quantize_pack(expected, next_bits, 1.3,
                                                 False, 1))
    out, _ = ops.mbb_conv2d_words(act, words, scale, bias, cin, w_bits,
                                  a_bits, False, *geometry[:-1], 1, None,
                                  0.0, math.inf, True, 0, 1.0, False)
    assert torch.equal(out, expected)
