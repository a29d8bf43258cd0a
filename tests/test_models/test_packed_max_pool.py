# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed models run their max pools on the compiled kernel where it gives
torch's values, and on torch's elsewhere."""
import pytest
import torch
from torch import nn

from mmbinary.models.packing import (ChannelsLastMaxPool2d,
                                     use_channels_last_max_pools)
from mmbinary.ops import ext_loaded


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def test_switched_max_pools_equal_torch_in_every_layout(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(3, 2, 1),
                          nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)))
    x = torch.randn(2, 3, 21, 19)
    with torch.no_grad():
        expected = [model(x), model(x.contiguous(
            memory_format=torch.channels_last))]
        assert use_channels_last_max_pools(model) == 2
        assert type(model[1]) is ChannelsLastMaxPool2d
        calls = []
        if ext_loaded():
            real = torch.ops.mmbinary.max_pool2d_channels_last
            monkeypatch.setattr(
                torch.ops.mmbinary, 'max_pool2d_channels_last',
                lambda *args: calls.append(args) or real(*args),
                raising=False)
        got = [model(x), model(x.contiguous(
            memory_format=torch.channels_last))]
    for out, ref in zip(got, expected):
        assert torch.equal(_bits(out), _bits(ref))
    # the channels-last input of the plain max pool took the kernel once;
    # the NCHW input and the ceil_mode pool stayed on torch
    assert len(calls) == (1 if ext_loaded() else 0)


@pytest.mark.skipif(not ext_loaded(), reason='no compiled extension')
def test_max_pool_that_tracks_gradients_stays_on_torch():
    pool = ChannelsLastMaxPool2d(3, 2, 1)
    x = torch.randn(1, 4, 9, 9).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    pool(x).sum().backward()
    xd = x.detach().clone().requires_grad_()
    nn.functional.max_pool2d(xd, 3, 2, 1).sum().backward()
    assert torch.equal(x.grad, xd.grad)
