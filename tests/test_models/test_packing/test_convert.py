# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcv.cnn import ConvModule
from mmdet.models.backbones import ResNet
from torch import nn

from mmbinary.models import MBBConv2d, MBBLinear, swap_to_mbb
from mmbinary.models.packing import (FoldedNorm, PackedMBBConv2d,
                                     PackedMBBLinear, apply_packed_layout,
                                     convert_to_packed, find_layer_norm_pairs,
                                     packed_layout)
from mmbinary.ops import mbb_conv2d_accumulate_reference


def calibrated(layer, x):
    layer.train()
    layer(x)  # data-driven initialization of the activation clip
    return layer.eval()


@st.composite
def layer_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    in_channels = groups * draw(st.sampled_from([1, 3, 33, 65]))
    out_channels = groups * draw(st.integers(1, 5))
    kernel = draw(st.sampled_from([1, 3, 5]))
    return dict(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=draw(st.integers(1, 2)),
        padding=draw(st.integers(0, 3)),
        dilation=draw(st.integers(1, 2)),
        groups=groups,
        bias=draw(st.booleans()),
        w_bits=draw(st.integers(1, 8)),
        a_bits=draw(st.integers(1, 8)),
        a_mode=draw(st.sampled_from(['signed', 'unsigned'])),
    ), draw(st.integers(0, 2**16))


@settings(max_examples=25, deadline=None)
@given(layer_cases())
def test_packed_conv_equals_the_mbb_conv(case):
    options, seed = case
    torch.manual_seed(seed)
    conv = MBBConv2d(**options)
    size = 4 + (options['kernel_size'] - 1) * options['dilation']
    x = torch.randn(2, options['in_channels'], size, size + 1)
    calibrated(conv, x)
    packed = PackedMBBConv2d.from_mbb(conv)
    out = packed(x)
    # Integer accumulators exactly ...
    codes, scale = conv.weight_quantizer.codes(conv.weight)
    _, a = conv.act_quantizer.codes(x)
    acc = mbb_conv2d_accumulate_reference(a, codes, conv.stride, conv.padding,
                                          conv.dilation, conv.groups)
    expected = acc.float() * packed.out_scale.view(1, -1, 1, 1) + \
        packed.out_bias.view(1, -1, 1, 1)
    assert torch.equal(out, expected)
    # ... and the float output of the training layer to float32 rounding.
    with torch.no_grad():
        reference = conv(x)
    tolerance = 1e-5 * reference.abs().max().item() + 1e-6
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=tolerance)


def test_packed_linear_equals_the_mbb_linear():
    torch.manual_seed(0)
    layer = MBBLinear(70, 9, w_bits=3, a_bits=2)
    x = torch.randn(4, 3, 70)
    calibrated(layer, x)
    packed = PackedMBBLinear.from_mbb(layer)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), layer(x), rtol=1e-4, atol=1e-5)
    assert packed(x).shape == (4, 3, 9)


def test_norm_following_an_mbb_conv_is_folded():
    torch.manual_seed(0)
    block = ConvModule(8, 16, 3, padding=1,
                       conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=3),
                       norm_cfg=dict(type='BN'))
    x = torch.randn(2, 8, 10, 10)
    block.train()
    for _ in range(3):
        block(x)  # running statistics and the clip
    block.eval()
    with torch.no_grad():
        expected = block(x)
    assert find_layer_norm_pairs(block, (MBBConv2d, )) == [('conv', 'bn')]
    convert_to_packed(block)
    assert isinstance(block.conv, PackedMBBConv2d)
    assert isinstance(block.bn, FoldedNorm)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-4)


def resnet18_mbb():
    model = ResNet(depth=18, base_channels=16, out_indices=(0, 1, 2, 3))
    return swap_to_mbb(model, 2, 2, skip=['conv1'])


def test_resnet_packed_and_unpacked_agree_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = resnet18_mbb()
    x = torch.randn(2, 3, 64, 64)
    model.train()
    for _ in range(2):
        model(x)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    convert_to_packed(model)
    packed_count = sum(
        isinstance(m, PackedMBBConv2d) for m in model.modules())
    folded = sum(isinstance(m, FoldedNorm) for m in model.modules())
    assert packed_count == 19 and folded == 19  # 16 block convs + 3 shortcuts
    assert type(model.conv1) is nn.Conv2d  # the stem stays float
    assert not any(isinstance(m, (MBBConv2d, nn.BatchNorm2d))
                   for name, m in model.named_modules() if name != 'bn1')
    with torch.no_grad():
        outputs = model(x)
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    # A packed checkpoint has no float weight of the packed layers, and
    # loads into a model built afresh.
    state = model.state_dict()
    assert not any(key.endswith('conv1.weight') and key != 'conv1.weight'
                   for key in state)
    path = tmp_path / 'packed.pth'
    torch.save(dict(state_dict=state, layout=packed_layout(model)), path)
    saved = torch.load(path, weights_only=True)
    fresh = apply_packed_layout(resnet18_mbb(), saved['layout'])
    fresh.load_state_dict(saved['state_dict'], strict=True)
    with torch.no_grad():
        for out, ref in zip(fresh(x), outputs):
            assert torch.equal(out, ref)


def test_packing_needs_calibrated_quantizers():
    model = swap_to_mbb(nn.Sequential(nn.Conv2d(3, 4, 3)), 2, 2)
    with pytest.raises(RuntimeError, match='has not seen data'):
        convert_to_packed(model)


def test_layout_mismatch_is_refused():
    packed = PackedMBBConv2d(4, 8, 3, padding=1, w_bits=2, a_bits=2,
                             signed=False)
    other = PackedMBBConv2d(4, 8, 3, padding=1, w_bits=3, a_bits=2,
                            signed=False)
    with pytest.raises(ValueError, match='packed layer mismatch'):
        other.load_state_dict(packed.state_dict())
    with pytest.raises(ValueError, match='does not have'):
        apply_packed_layout(
            nn.Sequential(), dict(layers={'x': dict(
                type='PackedMBBConv2d', config=packed.config())},
                                  folded_norms=[]))
