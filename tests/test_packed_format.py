# Copyright (c) mmbinary contributors. All rights reserved.
"""The packed format (``mmbinary/packed_format.py``): its integer
accumulator against the compiled op and the PyTorch reference, its argument
checks, and every packing routine against vectors stored before the format
moved into one module (``tests/data/packed_format_vectors.npz``, bit for
bit)."""
import os.path as osp

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbinary import packed_format as fmt
from mmbinary.export import activation_levels as export_activation_levels
from mmbinary.ops import (activation_codes_reference, mbb_conv2d,
                          mbb_conv2d_accumulate,
                          mbb_conv2d_accumulate_reference,
                          mbb_conv2d_reference, pack_activation_codes,
                          pack_weight_codes, quantize_pack,
                          unpack_activation_words, unpack_weight_words)
from mmbinary.packed_format import mbb_conv2d_accumulate_numpy

VECTORS = osp.join(osp.dirname(osp.abspath(__file__)), 'data',
                   'packed_format_vectors.npz')


@st.composite
def layers(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    return dict(
        groups=groups,
        in_channels=groups * draw(st.sampled_from([1, 5, 64, 70])),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel=(draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1,
                                                                       3]))),
        stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        padding=(draw(st.integers(0, 3)), draw(st.integers(0, 2))),
        dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 2))),
        w_bits=draw(st.integers(1, 8)),
        a_bits=draw(st.integers(1, 8)),
        signed=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)))


@settings(max_examples=30, deadline=None)
@given(layers())
def test_numpy_accumulator_equals_the_compiled_op_bit_for_bit(layer):
    gen = torch.Generator().manual_seed(layer['seed'])
    kh, kw = layer['kernel']
    height = 3 + (kh - 1) * layer['dilation'][0]
    width = 4 + (kw - 1) * layer['dilation'][1]
    x = torch.randn(2, layer['in_channels'], height, width, generator=gen)
    w_max = 2**layer['w_bits'] - 1
    codes = torch.randint(
        0, w_max + 1,
        (layer['out_channels'], layer['in_channels'] // layer['groups'], kh,
         kw),
        generator=gen) * 2 - w_max
    inv_step = 1.7
    act_words = quantize_pack(x, layer['a_bits'], inv_step, layer['signed'],
                              layer['groups'])
    weight_words = pack_weight_codes(codes, layer['w_bits'], layer['groups'])
    conv = dict(stride=layer['stride'], padding=layer['padding'],
                dilation=layer['dilation'], groups=layer['groups'])
    compiled = mbb_conv2d_accumulate(
        act_words, weight_words, in_channels=layer['in_channels'],
        out_channels=layer['out_channels'], w_bits=layer['w_bits'],
        a_bits=layer['a_bits'], signed=layer['signed'],
        kernel_size=layer['kernel'], **conv)
    numpy_acc = mbb_conv2d_accumulate_numpy(
        act_words.numpy(), weight_words.numpy(),
        in_channels=layer['in_channels'], w_bits=layer['w_bits'],
        a_bits=layer['a_bits'], signed=layer['signed'], **conv)
    assert numpy_acc.dtype == np.int32
    assert torch.equal(torch.from_numpy(numpy_acc), compiled)
    # And both are the convolution of the integer codes.
    a = activation_codes_reference(x, layer['a_bits'], inv_step,
                                   layer['signed'])
    assert torch.equal(compiled,
                       mbb_conv2d_accumulate_reference(a, codes, **conv))


def test_mismatched_words_are_refused():
    act = np.zeros((1, 4, 4, 1, 2, 1), dtype=np.int64)
    weight = np.zeros((3, 2, 3, 3, 1), dtype=np.int64)
    with pytest.raises(ValueError, match='do not match'):
        mbb_conv2d_accumulate_numpy(act, weight, in_channels=8, w_bits=3,
                                    a_bits=2, signed=False)
    with pytest.raises(ValueError, match='must be'):
        mbb_conv2d_accumulate_numpy(act[0], weight, in_channels=8, w_bits=2,
                                    a_bits=2, signed=False)


def test_border_correction_of_signed_activations():
    # One input channel, all activations at the top level (a = +L), all
    # weights +1 at 1 bit: each output sums L over its valid taps only.
    act_words = quantize_pack(torch.full((1, 1, 3, 3), 9.0), 2, 1.0, True)
    weight_words = pack_weight_codes(torch.ones(1, 1, 3, 3, dtype=torch.int),
                                     1)
    acc = mbb_conv2d_accumulate_numpy(
        act_words.numpy(), weight_words.numpy(), in_channels=1, w_bits=1,
        a_bits=2, signed=True, padding=1)
    assert acc[0, 0].tolist() == [[12, 18, 12], [18, 27, 18], [12, 18, 12]]


# ---- stored vectors (made by the code before this module existed) -----------

def stored_cases():
    data = np.load(VECTORS)
    names = sorted({key.split('.')[0] for key in data.files})
    cases = []
    for name in names:
        case = {key.split('.', 1)[1]: data[key] for key in data.files
                if key.startswith(name + '.')}
        (n, cin, cout, height, width, kh, kw, sh, sw, ph, pw, dh, dw, groups,
         w_bits, a_bits, signed) = case['geometry'].tolist()
        case.update(in_channels=cin, out_channels=cout, kernel=(kh, kw),
                    stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                    groups=groups, w_bits=w_bits, a_bits=a_bits,
                    signed=bool(signed), inv=float(case['inv_step']))
        cases.append(pytest.param(case, id=name))
    return cases


def test_stored_vectors_are_small_and_cover_both_modes():
    cases = [param.values[0] for param in stored_cases()]
    assert osp.getsize(VECTORS) < 200 * 1024
    assert {case['signed'] for case in cases} == {False, True}
    assert {case['groups'] > 1 for case in cases} == {False, True}
    assert max(case['w_bits'] for case in cases) == 8


@pytest.mark.parametrize('case', stored_cases())
def test_numpy_packing_equals_the_stored_vectors(case):
    c = case
    words = fmt.pack_weight_codes(c['weight_codes'], c['w_bits'], c['groups'])
    assert words.dtype == np.int64
    assert np.array_equal(words, c['weight_words'])
    assert np.array_equal(
        fmt.unpack_weight_words(words, c['in_channels'], c['w_bits'],
                                c['groups']), c['weight_codes'])
    assert np.array_equal(
        fmt.unpack_weight_bits(words, c['in_channels'], c['groups']),
        c['weight_bits'])
    assert np.array_equal(
        fmt.tap_weight_sums(words, c['in_channels'], c['w_bits'],
                            c['groups']), c['tap_weight_sums'])
    assert fmt.check_pad_bits(words, c['in_channels'], c['groups'])
    q = fmt.activation_levels(c['x'], c['a_bits'], c['inv'], c['signed'])
    assert np.array_equal(export_activation_levels(c['x'], c['a_bits'],
                                                   c['inv'], c['signed']), q)
    assert np.array_equal(fmt.levels_to_codes(q, c['a_bits'], c['signed']),
                          c['act_codes'])
    act_words = fmt.pack_activation_levels(q, c['a_bits'], c['groups'])
    assert np.array_equal(act_words, c['act_words'])
    assert fmt.check_pad_bits(act_words, c['in_channels'], c['groups'])
    assert np.array_equal(
        fmt.unpack_activation_levels(act_words, c['in_channels'],
                                     c['a_bits']), q)
    acc = mbb_conv2d_accumulate_numpy(
        act_words, words, in_channels=c['in_channels'], w_bits=c['w_bits'],
        a_bits=c['a_bits'], signed=c['signed'], stride=c['stride'],
        padding=c['padding'], dilation=c['dilation'], groups=c['groups'])
    assert acc.dtype == np.int32 and np.array_equal(acc, c['acc'])
    out = fmt.epilogue(acc, c['out_scale'], c['out_bias'])
    assert out.dtype == np.float32 and np.array_equal(out, c['output'])


@pytest.mark.parametrize('case', stored_cases())
def test_torch_ops_equal_the_stored_vectors(case):
    """The tensor packing, the references and the ops (compiled, or their
    fallback without the extension) give the stored bits."""
    c = case
    x = torch.from_numpy(c['x'])
    weight = torch.from_numpy(c['weight_codes'])
    scale = torch.from_numpy(c['out_scale'])
    bias = torch.from_numpy(c['out_bias'])
    geometry = dict(stride=c['stride'], padding=c['padding'],
                    dilation=c['dilation'], groups=c['groups'])
    codes = activation_codes_reference(x, c['a_bits'], c['inv'], c['signed'])
    assert torch.equal(codes, torch.from_numpy(c['act_codes']))
    words = pack_weight_codes(weight, c['w_bits'], c['groups'])
    assert torch.equal(words, torch.from_numpy(c['weight_words']))
    assert torch.equal(
        unpack_weight_words(words, c['in_channels'], c['w_bits'],
                            c['groups']), weight)
    act_words = pack_activation_codes(codes, c['a_bits'], c['signed'],
                                      c['groups'])
    assert torch.equal(act_words, torch.from_numpy(c['act_words']))
    assert torch.equal(
        unpack_activation_words(act_words, c['in_channels'], c['a_bits'],
                                c['signed']), codes)
    assert torch.equal(
        quantize_pack(x, c['a_bits'], c['inv'], c['signed'], c['groups']),
        act_words)
    expected_acc = torch.from_numpy(c['acc'])
    assert torch.equal(
        mbb_conv2d_accumulate_reference(codes, weight, **geometry),
        expected_acc)
    assert torch.equal(
        mbb_conv2d_accumulate(act_words, words,
                              in_channels=c['in_channels'],
                              out_channels=c['out_channels'],
                              w_bits=c['w_bits'], a_bits=c['a_bits'],
                              signed=c['signed'], kernel_size=c['kernel'],
                              **geometry), expected_acc)
    expected = torch.from_numpy(c['output'])
    assert torch.equal(
        mbb_conv2d_reference(x, weight, scale, bias, a_bits=c['a_bits'],
                             inv_step=c['inv'], signed=c['signed'],
                             **geometry), expected)
    assert torch.equal(
        mbb_conv2d(x, words, scale, bias, in_channels=c['in_channels'],
                   w_bits=c['w_bits'], a_bits=c['a_bits'], inv_step=c['inv'],
                   signed=c['signed'], kernel_size=c['kernel'], **geometry),
        expected)


# ---- arguments and words ----------------------------------------------------

def test_pair_and_int_checks_name_the_argument():
    assert fmt.pair(3, 'kernel_size', 1) == (3, 3)
    assert fmt.pair((2, np.int64(1)), 'stride', 1) == (2, 1)
    with pytest.raises(ValueError, match='stride must be >= 1, got 0'):
        fmt.pair((1, 0), 'stride', 1)
    with pytest.raises(ValueError, match='padding must be an int or 2 ints'):
        fmt.pair((1, 1, 1), 'padding', 0)
    with pytest.raises(ValueError, match='dilation must be an int'):
        fmt.pair(1.0, 'dilation', 1)
    with pytest.raises(ValueError, match='groups must be an integer'):
        fmt.check_int(True, 'groups', 1)


def test_word_counts_and_accumulator_bound():
    assert [fmt.num_group_words(c) for c in (1, 64, 65, 128, 129)] == [
        1, 1, 2, 2, 3
    ]
    assert fmt.num_group_words(130, groups=2) == 2
    assert fmt.accumulator_bound(64, (3, 3), 2, 2) == 64 * 9 * 3 * 3
    with pytest.raises(ValueError, match='int32 accumulator could overflow'):
        fmt.check_accumulator_bound(4096, (7, 7), 8, 8)


@pytest.mark.parametrize('count', [1, 63, 64, 65, 130])
def test_bits_round_trip_and_pad_bits(count):
    rng = np.random.default_rng(count)
    bits = rng.integers(0, 2, (3, count))
    words = fmt.pack_bits(bits)
    assert words.shape == (3, fmt.num_group_words(count))
    assert np.array_equal(fmt.unpack_bits(words, count), bits)
    assert fmt.check_pad_bits(words, count, 1)
    if count % 64:
        words[0, -1] |= np.int64(1) << np.int64(63)  # a pad bit set
        assert not fmt.check_pad_bits(words, count, 1)


def test_inv_step_is_float32():
    assert fmt.check_inv_step(0.1) == float(np.float32(0.1))
    for bad in (0.0, -1.0, float('nan'), 1e-50, True, '1'):
        with pytest.raises(ValueError, match='inv_step must be a finite'):
            fmt.check_inv_step(bad)


def test_bad_codes_and_words_are_refused():
    with pytest.raises(ValueError, match='odd integers in'):
        fmt.pack_weight_codes(np.zeros((2, 3, 1, 1)), 2)
    with pytest.raises(ValueError, match='codes must hold integers'):
        fmt.pack_weight_codes(np.full((2, 3, 1, 1), 0.5), 2)
    with pytest.raises(ValueError, match='signed activation codes must be'):
        fmt.codes_to_levels(np.array([2]), 2, True)
    with pytest.raises(ValueError, match=r'activation levels must lie in'):
        fmt.pack_activation_levels(np.full((1, 2, 1, 1), 4), 2)
    with pytest.raises(ValueError, match=r'weight_words must have shape'):
        fmt.unpack_weight_words(np.zeros((2, 1, 3, 3, 1), np.int64), 8, 2)
    with pytest.raises(ValueError, match=r'act_words must have shape'):
        fmt.unpack_activation_levels(np.zeros((1, 2, 2, 1, 2, 2), np.int64),
                                     64, 2)


def test_bits_checks_name_the_argument():
    assert fmt.check_bits(np.int64(8), 'a_bits') == 8
    assert fmt.num_levels(3) == 7
    for bad in (0, 9, 2.0, True, '2'):
        with pytest.raises(ValueError,
                           match='w_bits must be an integer in 1..8'):
            fmt.check_bits(bad, 'w_bits')
