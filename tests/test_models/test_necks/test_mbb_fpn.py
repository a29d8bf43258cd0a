# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from mmdet.models.necks import FPN
from torch import nn

from mmbinary.models.layers import MBBConv2d
from mmbinary.models.necks import MBBFPN

IN_CHANNELS = [8, 16, 32, 64]


def backbone_outputs(batch: int = 1, size: int = 32):
    """Post-ReLU (non-negative) features, halving in size per level."""
    return tuple(
        torch.rand(batch, channels, size // 2**i, size // 2**i)
        for i, channels in enumerate(IN_CHANNELS))


def modes(conv_modules):
    return [module.conv.a_mode for module in conv_modules]


def test_retinanet_style_modes_and_shapes():
    kwargs = dict(
        in_channels=IN_CHANNELS,
        out_channels=16,
        num_outs=5,
        start_level=1,
        add_extra_convs='on_input')
    neck = MBBFPN(**kwargs, w_bits=3, a_bits=2)
    assert modes(neck.lateral_convs) == ['unsigned'] * 3
    # P3-P5 read top-down sums; P6 reads C5 (post-ReLU); P7 reads P6.
    assert modes(neck.fpn_convs) == ['signed'] * 3 + ['unsigned', 'signed']
    convs = [m for m in neck.modules() if isinstance(m, MBBConv2d)]
    assert len(convs) == 3 + 5
    assert all((c.w_bits, c.a_bits) == (3, 2) for c in convs)
    assert not [m for m in neck.modules() if type(m) is nn.Conv2d]

    float_neck = FPN(**kwargs)
    neck.load_state_dict(float_neck.state_dict(), strict=True)
    neck.init_weights()
    outs = neck(backbone_outputs())
    assert [tuple(out.shape) for out in outs] == [(1, 16, 16, 16),
                                                  (1, 16, 8, 8),
                                                  (1, 16, 4, 4),
                                                  (1, 16, 2, 2),
                                                  (1, 16, 1, 1)]


def test_faster_rcnn_style_has_no_extra_convs():
    neck = MBBFPN(in_channels=IN_CHANNELS, out_channels=16, num_outs=5)
    assert modes(neck.lateral_convs) == ['unsigned'] * 4
    assert modes(neck.fpn_convs) == ['signed'] * 4
    outs = neck(backbone_outputs())
    assert len(outs) == 5


@pytest.mark.parametrize('extra, relu, expected', [
    ('on_output', False, ['signed', 'signed']),
    ('on_lateral', True, ['signed', 'unsigned']),
    ('on_input', True, ['unsigned', 'unsigned']),
])
def test_extra_conv_modes(extra, relu, expected):
    neck = MBBFPN(
        in_channels=IN_CHANNELS,
        out_channels=16,
        num_outs=6,
        add_extra_convs=extra,
        relu_before_extra_convs=relu)
    assert modes(neck.fpn_convs)[4:] == expected


def test_relu_act_cfg_makes_sums_unsigned():
    neck = MBBFPN(
        in_channels=IN_CHANNELS,
        out_channels=16,
        num_outs=4,
        act_cfg=dict(type='ReLU'))
    assert modes(neck.fpn_convs) == ['unsigned'] * 4


def test_encode_switches_and_in_act_mode():
    neck = MBBFPN(
        in_channels=IN_CHANNELS,
        out_channels=16,
        num_outs=4,
        encode_lateral=False,
        in_act_mode='signed')
    assert all(type(m.conv) is nn.Conv2d for m in neck.lateral_convs)
    assert all(isinstance(m.conv, MBBConv2d) for m in neck.fpn_convs)
    neck = MBBFPN(
        in_channels=IN_CHANNELS,
        out_channels=16,
        num_outs=4,
        encode_output=False,
        in_act_mode='auto')
    assert modes(neck.lateral_convs) == ['auto'] * 4
    assert all(type(m.conv) is nn.Conv2d for m in neck.fpn_convs)


@pytest.mark.parametrize('kwargs, key', [
    (dict(w_bits=0), 'w_bits'),
    (dict(a_bits=9), 'a_bits'),
    (dict(in_act_mode='relu'), 'in_act_mode'),
    (dict(mbb_cfg=dict(w_bits=2)), 'mbb_cfg'),
])
def test_bad_options_are_rejected_by_name(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MBBFPN(in_channels=IN_CHANNELS, out_channels=16, num_outs=4,
               **kwargs)


def test_built_from_mmdet_scope_with_prefix():
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        neck = MODELS.build(
            dict(
                type='mmbinary.MBBFPN',
                in_channels=IN_CHANNELS,
                out_channels=16,
                num_outs=5,
                w_bits=4,
                a_bits=4))
    assert isinstance(neck, MBBFPN)
    assert neck.fpn_convs[0].conv.w_bits == 4
