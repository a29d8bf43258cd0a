# Copyright (c) mmbinary contributors. All rights reserved.
import warnings

import pytest
import torch
from torch import nn

from mmbinary.models import MBBConv2d, MBBLinear, swap_to_mbb


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_every_conv_and_linear_is_swapped_with_shared_weights():
    net = small_net()
    weight = net[3][0].weight
    swap_to_mbb(net, w_bits=3, a_bits=4, a_mode='unsigned')
    assert isinstance(net[0], MBBConv2d) and isinstance(net[3][0], MBBConv2d)
    assert isinstance(net[6], MBBLinear)
    assert net[3][0].weight is weight
    assert (net[0].w_bits, net[0].a_bits) == (3, 4)
    assert net[0].a_mode == 'unsigned'
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_skip_and_overrides():
    net = swap_to_mbb(
        small_net(), 2, 2, skip=['0', '6'],
        overrides={'3.*': dict(w_bits=4, a_bits=8)})
    assert type(net[0]) is nn.Conv2d and type(net[6]) is nn.Linear
    assert (net[3][0].w_bits, net[3][0].a_bits) == (4, 8)


def test_outputs_follow_the_float_model_at_high_precision():
    torch.manual_seed(0)
    net = small_net().eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    swap_to_mbb(net, 8, 8)
    torch.testing.assert_close(net(x), expected, rtol=0.05, atol=0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='matched no swappable module'):
        swap_to_mbb(small_net(), overrides={'head.*': dict(w_bits=4)})
    with pytest.raises(TypeError, match='list of patterns'):
        swap_to_mbb(small_net(), skip='0')
    with pytest.raises(ValueError, match='w_bits'):
        swap_to_mbb(small_net(), w_bits=12)


def test_old_names_still_work_and_warn_once():
    from mmbinary.models import encode_model
    from mmbinary.models.backbones import encode_resnet, swap_resnet_convs
    from mmbinary.models.swap import deprecated_alias
    alias = deprecated_alias(swap_to_mbb, 'old_swap')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        first, second = alias(small_net(), 2, 2), alias(small_net(), 2, 2)
    assert isinstance(first[0], MBBConv2d) and isinstance(second[6],
                                                          MBBLinear)
    messages = [str(w.message) for w in caught
                if issubclass(w.category, DeprecationWarning)]
    assert messages == [
        'old_swap is deprecated; use mmbinary.models.swap.swap_to_mbb (same '
        'arguments)'
    ]
    assert encode_model.__wrapped__ is swap_to_mbb
    assert encode_resnet.__wrapped__ is swap_resnet_convs
