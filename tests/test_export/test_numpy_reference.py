# Copyright (c) mmbinary contributors. All rights reserved.
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbinary.export import mbb_conv2d_accumulate_numpy
from mmbinary.ops import (mbb_conv2d_accumulate,
                          mbb_conv2d_accumulate_reference, pack_weight_codes,
                          quantize_pack)
from mmbinary.ops.mbb_conv2d import activation_codes_reference


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
def test_numpy_reference_equals_the_compiled_op_bit_for_bit(layer):
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
