# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from mmdet.models.backbones import MobileNetV2
from torch import nn

from mmbinary.models import MBBConv2d
from mmbinary.models.backbones import MBBMobileNetV2


def mbb_convs(model):
    return {name: m for name, m in model.named_modules()
            if isinstance(m, MBBConv2d)}


def test_modes_follow_each_conv_input_and_depthwise_stays_float():
    model = MBBMobileNetV2(out_indices=(2, 4, 6), w_bits=3, a_bits=2)
    convs = mbb_convs(model)
    # 16 blocks with an expand conv and 17 projections, plus the last conv.
    assert len(convs) == 16 + 17 + 1
    assert convs['layer2.0.expand_conv.conv'].a_mode == 'signed'
    assert convs['layer2.0.linear_conv.conv'].a_mode == 'unsigned'
    assert convs['conv2.conv'].a_mode == 'signed'
    assert type(model.conv1.conv) is nn.Conv2d
    assert type(model.layer2[0].depthwise_conv.conv) is nn.Conv2d
    assert {(c.w_bits, c.a_bits) for c in convs.values()} == {(3, 2)}
    with_dw = MBBMobileNetV2(encode_depthwise=True, encode_stem=True)
    assert len(mbb_convs(with_dw)) == len(convs) + 17 + 1
    assert with_dw.layer2[0].depthwise_conv.conv.a_mode == 'unsigned'


def test_float_checkpoint_loads_and_the_model_runs():
    float_model = MobileNetV2(out_indices=(2, 4, 6))
    model = MBBMobileNetV2(out_indices=(2, 4, 6))
    model.load_state_dict(float_model.state_dict(), strict=True)
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 8, 8), (2, 96, 4, 4),
                                              (2, 320, 2, 2)]


def test_bad_bits_are_refused():
    with pytest.raises(ValueError, match='w_bits must be an integer'):
        MBBMobileNetV2(w_bits=0)


def test_dilated_mmseg_variant_encodes_the_same_convs_and_loads_float():
    from mmseg.models.backbones import MobileNetV2 as SegMobileNetV2

    from mmbinary.models.backbones import MBBDilatedMobileNetV2
    arch = dict(strides=(1, 2, 2, 1, 1, 1, 1),
                dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6))
    model = MBBDilatedMobileNetV2(w_bits=2, a_bits=3, **arch)
    convs = mbb_convs(model)
    # mmseg's MobileNetV2 ends at layer7: no final 1x1 conv.
    assert len(convs) == 16 + 17
    assert convs['layer2.0.conv.0.conv'].a_mode == 'signed'
    assert convs['layer2.0.conv.2.conv'].a_mode == 'unsigned'
    assert convs['layer1.0.conv.1.conv'].a_mode == 'unsigned'
    assert type(model.layer2[0].conv[1].conv) is nn.Conv2d  # depthwise
    assert convs['layer7.0.conv.2.conv'].dilation == (1, 1)
    assert convs['layer6.0.conv.0.conv'].w_bits == 2
    model.load_state_dict(SegMobileNetV2(**arch).state_dict(), strict=True)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 16, 16),
                                              (1, 32, 8, 8),
                                              (1, 96, 8, 8),
                                              (1, 320, 8, 8)]
    with_dw = MBBDilatedMobileNetV2(encode_depthwise=True, **arch)
    assert with_dw.layer7[0].conv[1].conv.dilation == (4, 4)
    assert with_dw.layer7[0].conv[1].conv.a_mode == 'unsigned'


def test_stem_has_its_own_bits_only_when_encoded():
    from mmbinary.models.backbones import MBBDilatedMobileNetV2
    model = MBBMobileNetV2(w_bits=2, a_bits=2, encode_stem=True,
                           stem_bits=8)
    stem = model.conv1.conv
    assert (stem.w_bits, stem.a_bits, stem.a_mode) == (8, 8, 'signed')
    others = {(c.w_bits, c.a_bits) for c in mbb_convs(model).values()
              if c is not stem}
    assert others == {(2, 2)}
    seg = MBBDilatedMobileNetV2(encode_stem=True, stem_bits=(8, 4))
    assert (seg.conv1.conv.w_bits, seg.conv1.conv.a_bits) == (8, 4)
    assert MBBMobileNetV2(encode_stem=True).conv1.conv.w_bits == 2
    with pytest.raises(ValueError, match='stem_bits=8 needs encode_stem'):
        MBBMobileNetV2(stem_bits=8)
    with pytest.raises(ValueError, match=r'stem_bits\[1\] must be an int'):
        MBBMobileNetV2(encode_stem=True, stem_bits=(8, 9))
    with pytest.raises(ValueError, match='stem_bits must be an int or'):
        MBBMobileNetV2(encode_stem=True, stem_bits=(8, 8, 8))


@pytest.mark.parametrize('variant', ['mmdet', 'mmseg'])
def test_expand_a_bits_sets_the_convs_that_read_a_block_input(variant):
    """``expand_a_bits``: the expand convs and the final 1x1 conv (signed
    block inputs) at their own activation bits, the projections at
    ``a_bits``."""
    from mmbinary.models.backbones import MBBDilatedMobileNetV2
    cls = MBBMobileNetV2 if variant == 'mmdet' else MBBDilatedMobileNetV2
    model = cls(w_bits=2, a_bits=2, expand_a_bits=4)
    bits = {}
    for conv in mbb_convs(model).values():
        bits.setdefault(conv.a_mode, set()).add((conv.w_bits, conv.a_bits))
    assert bits == {'signed': {(2, 4)}, 'unsigned': {(2, 2)}}
    assert model.expand_a_bits == 4
    assert cls().expand_a_bits == 2
    with pytest.raises(ValueError, match='expand_a_bits must be an integer'):
        cls(expand_a_bits=0)
