# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcv.cnn import ConvModule, build_conv_layer
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope
from torch import nn

from mmbinary.models import MBBConv2d


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    in_channels = groups * draw(st.integers(1, 4))
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.sampled_from([1, 3, 5, 7])),
              draw(st.sampled_from([1, 3])))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 4)), draw(st.integers(0, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    height = draw(st.integers(1, 9)) + (kernel[0] - 1) * dilation[0]
    width = draw(st.integers(1, 9)) + (kernel[1] - 1) * dilation[1]
    return dict(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        w_bits=draw(st.integers(1, 8)),
        a_bits=draw(st.integers(1, 8)),
        a_mode=draw(st.sampled_from(['signed', 'unsigned'])),
        w_mode=draw(st.sampled_from(['channel', 'paper'])),
    ), (draw(st.integers(1, 2)), height, width), draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_branch_sum_equals_the_quantized_conv(case):
    options, (batch, height, width), seed = case
    torch.manual_seed(seed)
    conv = MBBConv2d(**options, dtype=torch.float64)
    x = torch.randn(batch, options['in_channels'], height, width,
                    dtype=torch.float64)
    if options['a_mode'] == 'unsigned' and seed % 2:
        x = x.relu()  # post-ReLU input, the usual unsigned case
    expected = conv(x)
    branches_out, branches = conv.forward_branches(x, return_branches=True)
    assert branches.shape == (options['w_bits'], options['a_bits'],
                              *expected.shape)
    # Interior pixels of a binary branch are sums of +-1 products.
    assert torch.equal(branches, branches.round())
    torch.testing.assert_close(branches_out, expected, rtol=1e-9, atol=1e-9)


def test_forward_is_the_conv_of_the_dequantized_tensors():
    torch.manual_seed(0)
    conv = MBBConv2d(4, 6, 3, padding=2, dilation=2, w_bits=3, a_bits=2,
                     dtype=torch.float64)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    out = conv(x)
    codes, scale = conv.weight_quantizer.codes(conv.weight)
    _, a = conv.act_quantizer.codes(x)
    step = conv.act_quantizer.step().double()
    ref = F.conv2d(a.double() * step, codes.double() * scale.double().view(
        -1, 1, 1, 1), conv.bias, 1, 2, 2)
    torch.testing.assert_close(out, ref)
    assert conv.act_quantizer.is_signed  # auto: the input has negatives


def test_zero_padding_keeps_its_float_meaning_in_both_modes():
    # A constant input whose level is not 0: border outputs see fewer taps.
    for a_mode in ('signed', 'unsigned'):
        conv = MBBConv2d(1, 1, 3, padding=1, bias=False, w_bits=1,
                         a_bits=1, a_mode=a_mode, a_clip=1.0)
        nn.init.constant_(conv.weight, 1.0)
        x = torch.ones(1, 1, 4, 4)
        out = conv(x)
        assert out[0, 0, 1, 1] == 9 * out[0, 0, 0, 0] / 4
        torch.testing.assert_close(conv.forward_branches(x), out)


def test_gradients_reach_weight_input_and_clip():
    conv = MBBConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    conv(x).square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0
    assert conv.bias.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0
    assert conv.act_quantizer.clip.grad is not None
    assert conv.act_quantizer.clip.grad != 0


def test_float_state_dict_loads_strict_and_round_trips():
    float_conv = nn.Conv2d(3, 8, 3, padding=1)
    conv = MBBConv2d(3, 8, 3, padding=1)
    result = conv.load_state_dict(float_conv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(conv.weight, float_conv.weight)
    assert not bool(conv.act_quantizer.initialized)
    conv(torch.randn(1, 3, 8, 8).relu())
    state = conv.state_dict()
    assert {'act_quantizer.clip', 'act_quantizer.signed',
            'act_quantizer.initialized'} <= set(state)
    restored = MBBConv2d(3, 8, 3, padding=1)
    restored.load_state_dict(state, strict=True)
    assert not restored.act_quantizer.is_signed
    assert torch.equal(restored.act_quantizer.clip, conv.act_quantizer.clip)
    x = torch.randn(1, 3, 8, 8).relu()
    assert torch.equal(restored(x), conv(x))


def test_from_float_shares_the_trained_parameters():
    float_conv = nn.Conv2d(3, 8, (3, 1), stride=2, padding=(1, 0),
                           dilation=2, groups=1, bias=False)
    conv = MBBConv2d.from_float(float_conv, w_bits=4, a_bits=3)
    assert conv.weight is float_conv.weight and conv.bias is None
    assert (conv.stride, conv.padding, conv.dilation,
            conv.kernel_size) == ((2, 2), (1, 0), (2, 2), (3, 1))
    assert 'w_bits=4, a_bits=3' in repr(conv)
    with pytest.raises(TypeError, match='nn.Conv2d'):
        MBBConv2d.from_float(nn.Linear(2, 2))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_conv_cfg_resolves_in_the_downstream_scopes(scope):
    with DefaultScope.overwrite_default_scope(scope):
        layer = build_conv_layer(
            dict(type='MBBConv', w_bits=3, a_bits=4), 4, 8, 3, padding=1)
        assert isinstance(layer, MBBConv2d)
        assert (layer.w_bits, layer.a_bits) == (3, 4)
        module = ConvModule(
            4, 8, 3, padding=1, conv_cfg=dict(type='MBBConv'),
            norm_cfg=dict(type='BN'))
        assert isinstance(module.conv, MBBConv2d)
        assert module(torch.randn(2, 4, 6, 6)).shape == (2, 8, 6, 6)


def test_kaiming_init_cfg_reaches_mbb_convs():

    class Net(BaseModule):

        def __init__(self):
            super().__init__(
                init_cfg=dict(type='Kaiming', layer='Conv2d', a=0,
                              mode='fan_out', nonlinearity='relu',
                              bias=0.5))
            self.conv = MBBConv2d(64, 256, 3)

    net = Net()
    nn.init.zeros_(net.conv.weight)
    net.init_weights()
    expected_std = (2 / (256 * 9))**0.5
    assert net.conv.weight.std().item() == pytest.approx(expected_std,
                                                         rel=0.05)
    assert torch.all(net.conv.bias == 0.5)


@pytest.mark.parametrize('options, message', [
    (dict(w_bits=0), 'w_bits must be an integer in 1..8'),
    (dict(w_bits=9), 'w_bits must be an integer in 1..8'),
    (dict(a_bits=2.5), 'a_bits must be an integer in 1..8'),
    (dict(a_bits='2'), 'a_bits must be an integer in 1..8'),
    (dict(w_mode='layer'), "w_mode must be one of \\('channel', 'paper'\\)"),
    (dict(a_mode='relu'), 'a_mode must be one of'),
    (dict(a_clip=-1.0), "a_clip must be 'learned' or a number > 0"),
    (dict(a_clip='fixed'), 'a_clip must be one of'),
    (dict(padding_mode='reflect'), "padding_mode='zeros' only"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MBBConv2d(3, 4, 3, **options)


def test_bad_input_is_refused():
    conv = MBBConv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r'input must be \(N, 3, H, W\)'):
        conv(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match='got shape \\(3, 8, 8\\)'):
        conv(torch.randn(3, 8, 8))
