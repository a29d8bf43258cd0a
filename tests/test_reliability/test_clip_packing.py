# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 7: a learned clip <= 0 or not finite is refused at packing,
naming the layer and its clip, and nothing is converted."""
import pytest
import torch
from torch import nn

from mmbinary.models import MBBConv2d, MBBLinear
from mmbinary.models.packing import convert_to_packed


def model():
    torch.manual_seed(0)
    net = nn.Sequential(MBBConv2d(4, 4, 3, padding=1), nn.ReLU(),
                        MBBConv2d(4, 4, 1), nn.Flatten(), MBBLinear(64, 3))
    net(torch.randn(2, 4, 4, 4))
    return net.eval()


@pytest.mark.parametrize('clip', [-6.0, 0.0, float('inf'), float('nan')])
def test_a_bad_clip_is_refused_naming_the_layer(clip):
    net = model()
    with torch.no_grad():
        net[2].act_quantizer.clip.fill_(clip)
    with pytest.raises(ValueError, match=rf'^2: its activation clip is '
                       rf'{clip!r}'):
        convert_to_packed(net)
    # all layers still MBB layers: nothing was half converted
    assert [type(m) for m in net] == [MBBConv2d, nn.ReLU, MBBConv2d,
                                      nn.Flatten, MBBLinear]


def test_non_finite_weights_are_refused():
    net = model()
    with torch.no_grad():
        net[4].weight[0, 0] = float('nan')
    with pytest.raises(ValueError, match='4: its weight holds NaN'):
        convert_to_packed(net)
