# Copyright (c) mmbinary contributors. All rights reserved.
"""The per-layer kernel choice: the float convolution of codes gives the
packed kernel's numbers exactly wherever it is used."""
import pytest
import torch

from mmbinary.models.layers import MBBConv2d
from mmbinary.models.packing import PackedMBBConv2d
from mmbinary.models.packing.kernel_choice import (accumulator_bound,
                                                   codes_exact)

pytestmark = pytest.mark.ext


def packed_layer(cin, cout, kernel, w_bits, a_bits, a_mode, seed, **conv):
    torch.manual_seed(seed)
    layer = MBBConv2d(cin, cout, kernel, w_bits=w_bits, a_bits=a_bits,
                      a_mode=a_mode, bias=True, **conv)
    layer.train()
    layer(torch.randn(2, cin, 9, 11))
    layer.eval()
    return PackedMBBConv2d.from_mbb(layer)


@pytest.mark.parametrize('case', [
    dict(cin=16, cout=96, kernel=1, w_bits=2, a_bits=2, a_mode='unsigned'),
    dict(cin=24, cout=20, kernel=3, w_bits=4, a_bits=4, a_mode='signed',
         padding=1, stride=2),
    dict(cin=8, cout=12, kernel=3, w_bits=3, a_bits=2, a_mode='signed',
         padding=2, dilation=2, groups=4),
    dict(cin=3, cout=16, kernel=7, w_bits=8, a_bits=8, a_mode='signed',
         padding=3, stride=2),
])
def test_codes_kernel_equals_binary_kernel(case):
    layer = packed_layer(seed=0, **case)
    assert codes_exact(layer)
    x = torch.randn(2, case['cin'], 13, 10) * 2
    x[0, 0, 3, 4] = float('nan')
    with torch.no_grad():
        layer.kernel = 'binary'
        binary = layer(x)
        layer.kernel = 'codes'
        codes = layer(x)
        layer.kernel = 'auto'
        auto = layer(x)
    assert torch.equal(binary.isnan(), codes.isnan())
    finite = ~binary.isnan()
    assert torch.equal(binary[finite], codes[finite])
    assert torch.equal(auto.isnan(), binary.isnan())
    assert torch.equal(auto[finite], binary[finite])
    assert set(layer.kernel_choice.values()) <= {'binary', 'codes'}
    assert tuple(x.shape) in layer.kernel_choice


def test_wide_layers_keep_the_binary_kernel():
    layer = packed_layer(2048, 8, 3, 8, 8, 'unsigned', seed=1, padding=1)
    assert accumulator_bound(layer) >= 2**24 and not codes_exact(layer)
    with torch.no_grad():
        layer(torch.rand(1, 2048, 4, 4))
    assert 'kernel_choice' not in layer.__dict__


def test_bad_kernel_name():
    layer = packed_layer(8, 8, 1, 2, 2, 'unsigned', seed=2)
    layer.kernel = 'gpu'
    with pytest.raises(ValueError, match="kernel must be one of"):
        layer(torch.rand(1, 8, 4, 4))
