# Copyright (c) mmbinary contributors. All rights reserved.
"""The RetinaHead's predictors at their own bit width (e.g. W8A8 in a
W2A2 head), packed like any other MBB conv."""
import pytest
import torch

from mmbinary.models import MBBConv2d
from mmbinary.models.heads import MBBRetinaHead
from mmbinary.models.packing import convert_to_packed
from mmbinary.ops import ext_loaded


@pytest.fixture(autouse=True)
def mmdet_scope():
    """The head builds its losses from mmdet's registry."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def head(**options) -> MBBRetinaHead:
    return MBBRetinaHead(
        num_classes=1,
        in_channels=8,
        feat_channels=8,
        stacked_convs=2,
        w_bits=2,
        a_bits=2,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32]),
        **options)


def test_predictors_take_their_own_bits_and_pack():
    torch.manual_seed(0)
    model = head(encode_cls_reg=True, cls_reg_bits=8).train()
    for predictor in (model.retina_cls, model.retina_reg):
        assert isinstance(predictor, MBBConv2d)
        assert (predictor.w_bits, predictor.a_bits) == (8, 8)
        assert predictor.a_mode == 'unsigned'
    towers = [m.conv for m in list(model.cls_convs) + list(model.reg_convs)]
    assert {(c.w_bits, c.a_bits) for c in towers} == {(2, 2)}
    features = tuple(torch.randn(2, 8, 8 - i, 9 - i) for i in range(3))
    model(features)  # the activation clips start on the first batch
    model.eval()
    if not ext_loaded():
        pytest.skip('the compiled op is needed to run packed layers')
    packed = convert_to_packed(model)
    towers = torch.relu(torch.randn(2, 8, 7, 9))
    with torch.no_grad():  # each predictor: its 64 branches, exactly
        for name in ('retina_cls', 'retina_reg'):
            torch.testing.assert_close(
                getattr(packed, name)(towers),
                getattr(model, name)(towers), rtol=1e-5, atol=1e-5)
        reference = model(features)
        out = packed(features)
    # end to end, codes on a rounding boundary may flip and spread
    for ours, theirs in zip(out[0] + out[1], reference[0] + reference[1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-2, atol=1e-2)


def test_predictor_bits_need_encoded_predictors():
    with pytest.raises(ValueError, match='cls_reg_bits=8 needs encode_cls'):
        head(cls_reg_bits=8)
    with pytest.raises(ValueError, match='cls_reg_bits must be an integer'):
        head(encode_cls_reg=True, cls_reg_bits=0)
