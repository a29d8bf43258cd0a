# Copyright (c) mmbinary contributors. All rights reserved.
"""NaN inputs: the packed path propagates NaN to every output whose
receptive field holds one, as float convolutions and the unpacked MBB
layers do, on every CPU kernel variant; packing alone refuses NaN."""
import os

import pytest
import torch
import torch.nn.functional as F

from mmbinary.models.layers import MBBConv2d
from mmbinary.models.packing import PackedMBBConv2d
from mmbinary.ops import build_info, ext_loaded, pack_weight_codes

pytestmark = pytest.mark.ext


def kernels():
    if not ext_loaded():
        return []
    names = []
    for name in build_info()['compiled_cpu_kernels'].split(','):
        os.environ['MMBINARY_CPU_KERNEL'] = name
        try:
            torch.ops.mmbinary.mbb_quantize_pack(torch.zeros(1, 1, 1, 1), 1,
                                                 1.0, False, 1)
            names.append(name)
        except RuntimeError:
            pass
        finally:
            os.environ.pop('MMBINARY_CPU_KERNEL', None)
    return names


@pytest.mark.parametrize('kernel', kernels())
@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('geometry', [
    dict(stride=1, padding=1, dilation=1),
    dict(stride=2, padding=0, dilation=1),
    dict(stride=1, padding=2, dilation=2),
])
def test_op_propagates_nan_like_a_float_conv(kernel, groups, geometry,
                                             monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    torch.manual_seed(0)
    codes = torch.randint(0, 4, (6, 8 // groups, 3, 3)) * 2 - 3
    x = torch.randn(2, 8, 9, 9)
    x[0, 3, 2, 5] = float('nan')
    x[1, 6, 8, 0] = float('nan')
    pair = (geometry['stride'], ) * 2, (geometry['padding'], ) * 2, (
        geometry['dilation'], ) * 2
    out = torch.ops.mmbinary.mbb_conv2d(x, pack_weight_codes(codes, 2,
                                                             groups),
                                        torch.ones(6), torch.zeros(6), 8, 2,
                                        2, 1.0, True, (3, 3), *pair, groups)
    expected = F.conv2d(x, codes.float(), groups=groups, **geometry)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), expected.isnan())


def test_packed_layer_gives_nan_where_the_unpacked_one_does():
    """The issue's case: a signed 8 -> 6 layer, one NaN input."""
    torch.manual_seed(0)
    layer = MBBConv2d(8, 6, 3, padding=1, a_mode='signed')
    layer.train()
    layer(torch.randn(4, 8, 7, 7))
    layer.eval()
    packed = PackedMBBConv2d.from_mbb(layer)
    x = torch.randn(1, 8, 7, 7)
    x[0, 2, 3, 3] = float('nan')
    with torch.no_grad():
        expected = layer(x)
    got = packed(x)
    assert int(expected.isnan().sum()) == 54
    assert torch.equal(got.isnan(), expected.isnan())
    finite = ~expected.isnan()
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize('kernel', kernels())
def test_packing_alone_refuses_nan(kernel, monkeypatch):
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    x = torch.zeros(1, 4, 3, 3)
    x[0, 1, 1, 1] = float('nan')
    with pytest.raises(RuntimeError, match='holds NaN'):
        torch.ops.mmbinary.mbb_quantize_pack(x, 2, 1.0, False, 1)


@pytest.mark.parametrize('groups', [1, 2])
def test_numpy_reference_propagates_nan_like_the_op(groups):
    from mmbinary.export.graph_reference import mbb_layer_numpy
    torch.manual_seed(1)
    codes = torch.randint(0, 4, (6, 8 // groups, 3, 3)) * 2 - 3
    words = pack_weight_codes(codes, 2, groups)
    scale, bias = torch.rand(6) + 0.5, torch.randn(6)
    x = torch.randn(1, 8, 9, 9)
    x[0, 5, 4, 1] = float('nan')
    geometry = dict(stride=[2, 1], padding=[1, 2], dilation=[1, 2])
    out = torch.ops.mmbinary.mbb_conv2d(x, words, scale, bias, 8, 2, 2, 0.8,
                                        True, (3, 3), geometry['stride'],
                                        geometry['padding'],
                                        geometry['dilation'], groups)
    attributes = dict(mode='signed', groups=groups, a_bits=2, w_bits=2,
                      in_channels=8, inv_step=0.8, **geometry)
    arrays = dict(weight_words=words.numpy(), out_scale=scale.numpy(),
                  out_bias=bias.numpy())
    reference = mbb_layer_numpy(x.numpy(), attributes, arrays)
    assert out.isnan().any()
    assert torch.equal(torch.from_numpy(reference).isnan(), out.isnan())
    finite = ~out.isnan()
    assert torch.equal(torch.from_numpy(reference)[finite], out[finite])


def test_branch_sum_refuses_nan_with_a_clear_error():
    layer = MBBConv2d(4, 4, 3, padding=1)
    layer.eval()
    x = torch.randn(1, 4, 5, 5)
    x[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='input holds NaN'):
        layer.forward_branches(x)
