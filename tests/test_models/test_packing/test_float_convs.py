# Copyright (c) mmbinary contributors. All rights reserved.
"""The float 1x1 convs a packed model keeps run on oneDNN: same results to
float32 rounding, same state dict, training untouched."""
import pytest
import torch
from torch import nn

from mmbinary.models.backbones import MBBResNet
from mmbinary.models.packing import (OneDNNConv2d, convert_to_packed,
                                     use_onednn_convs)

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason='torch built without oneDNN')


def convs():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3),
                         nn.Conv2d(16, 4, 1, stride=2),
                         nn.Conv2d(16, 12, 1, bias=False))


def test_only_plain_1x1_stride_1_convs_switch():
    model = convs()
    assert use_onednn_convs(model) == 2
    assert [type(m) is OneDNNConv2d for m in model] == [True, False, False,
                                                        True]
    assert use_onednn_convs(model) == 0  # idempotent


@needs_onednn
@pytest.mark.parametrize('channels_last', [False, True])
def test_onednn_conv_equals_conv2d(channels_last):
    conv = nn.Conv2d(24, 40, 1)
    fast = OneDNNConv2d(24, 40, 1)
    fast.load_state_dict(conv.state_dict())
    assert set(fast.state_dict()) == {'weight', 'bias'}
    x = torch.randn(2, 24, 9, 13)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = conv(x), fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) == (
        channels_last)


def test_training_uses_the_conv2d_forward():
    fast = OneDNNConv2d(4, 6, 1)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is not None


def test_convert_to_packed_switches_the_float_shortcuts():
    model = MBBResNet(depth=50, w_bits=2, a_bits=2, base_channels=16)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    packed = convert_to_packed(model)
    shortcut = packed.layer1[0].downsample[0]
    assert type(shortcut) is OneDNNConv2d  # 1x1, stride 1
    assert type(packed.layer2[0].downsample[0]) is nn.Conv2d  # stride 2
    assert type(packed.conv1) is nn.Conv2d  # the 7x7 stem
