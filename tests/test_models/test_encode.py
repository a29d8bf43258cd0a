# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from torch import nn

from mmbinary.models import MBBConv2d, MBBLinear, encode_model


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_every_conv_and_linear_is_encoded_with_shared_weights():
    net = small_net()
    weight = net[3][0].weight
    encode_model(net, w_bits=3, a_bits=4, a_mode='unsigned')
    assert isinstance(net[0], MBBConv2d) and isinstance(net[3][0], MBBConv2d)
    assert isinstance(net[6], MBBLinear)
    assert net[3][0].weight is weight
    assert (net[0].w_bits, net[0].a_bits) == (3, 4)
    assert net[0].a_mode == 'unsigned'
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_skip_and_overrides():
    net = encode_model(
        small_net(), 2, 2, skip=['0', '6'],
        overrides={'3.*': dict(w_bits=4, a_bits=8)})
    assert type(net[0]) is nn.Conv2d and type(net[6]) is nn.Linear
    assert (net[3][0].w_bits, net[3][0].a_bits) == (4, 8)


def test_outputs_follow_the_float_model_at_high_precision():
    torch.manual_seed(0)
    net = small_net().eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    encode_model(net, 8, 8)
    torch.testing.assert_close(net(x), expected, rtol=0.05, atol=0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='matched no encodable module'):
        encode_model(small_net(), overrides={'head.*': dict(w_bits=4)})
    with pytest.raises(TypeError, match='list of patterns'):
        encode_model(small_net(), skip='0')
    with pytest.raises(ValueError, match='w_bits'):
        encode_model(small_net(), w_bits=12)
