# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from mmengine.registry import MODELS
from torch import nn

from mmbinary.models import MBBLinear


@pytest.mark.parametrize('w_bits, a_bits', [(1, 1), (2, 3), (8, 8), (4, 1)])
@pytest.mark.parametrize('a_mode', ['signed', 'unsigned'])
def test_branch_sum_equals_the_quantized_linear(w_bits, a_bits, a_mode):
    torch.manual_seed(w_bits * 10 + a_bits)
    layer = MBBLinear(19, 7, w_bits=w_bits, a_bits=a_bits, a_mode=a_mode,
                      dtype=torch.float64)
    x = torch.randn(3, 5, 19, dtype=torch.float64)
    out, branches = layer.forward_branches(x, return_branches=True)
    assert branches.shape == (w_bits, a_bits, 3, 5, 7)
    torch.testing.assert_close(out, layer(x), rtol=1e-9, atol=1e-9)


def test_registered_and_loads_float_weights():
    layer = MODELS.build(dict(type='MBBLinear', in_features=6,
                              out_features=2, w_bits=3, a_bits=2))
    assert isinstance(layer, MBBLinear)
    float_layer = nn.Linear(6, 2)
    layer.load_state_dict(float_layer.state_dict(), strict=True)
    assert torch.equal(layer.weight, float_layer.weight)
    assert 'w_bits=3, a_bits=2' in repr(layer)
    shared = MBBLinear.from_float(float_layer, w_bits=1, a_bits=1)
    assert shared.weight is float_layer.weight


def test_bad_input_is_refused():
    layer = MBBLinear(6, 2)
    with pytest.raises(ValueError, match=r'input must be \(\*, 6\)'):
        layer(torch.randn(3, 5))
    with pytest.raises(ValueError, match='a_bits'):
        MBBLinear(6, 2, a_bits=0)
