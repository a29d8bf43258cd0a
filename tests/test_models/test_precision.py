# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary.models.precision: finding, setting and removing the precision
of a model config."""
import argparse
import copy

import pytest
from mmengine.config import DictAction

from mmbinary.models.precision import (float_model_config,
                                       precision_cfg_options, precision_parts,
                                       set_model_precision)

RETINANET = dict(
    type='RetinaNet',
    backbone=dict(type='mmbinary.MBBResNet', depth=18, w_bits=2, a_bits=2,
                  mbb_cfg=dict(w_mode='paper')),
    neck=dict(type='mmbinary.MBBFPN', w_bits=2, a_bits=2,
              in_act_mode='signed', in_channels=[64, 128, 256, 512],
              out_channels=16, num_outs=5),
    bbox_head=dict(type='RetinaHead', num_classes=1, in_channels=16,
                   conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)))
FASTER_RCNN_HEADS = dict(
    type='FasterRCNN',
    rpn_head=dict(type='mmbinary.MBBRPNHead', w_bits=2, a_bits=2),
    roi_head=dict(bbox_head=[
        dict(type='mmbinary.MBBShared2FCBBoxHead', w_bits=2, a_bits=2),
        dict(type='Shared2FCBBoxHead')
    ]))


def test_parts_are_found_by_walking_the_config():
    assert precision_parts(RETINANET) == [
        'backbone', 'neck', 'bbox_head.conv_cfg'
    ]
    # list items by index, as --cfg-options writes them
    assert precision_parts(FASTER_RCNN_HEADS) == [
        'rpn_head', 'roi_head.bbox_head.0'
    ]
    assert precision_parts(dict(backbone=dict(type='ResNet'))) == []


def test_set_model_precision_sets_every_part_and_nothing_else():
    model = copy.deepcopy(RETINANET)
    parts = set_model_precision(model, 4, 3)
    assert parts == ['backbone', 'neck', 'bbox_head.conv_cfg']
    assert (model['backbone']['w_bits'], model['backbone']['a_bits']) == (4,
                                                                          3)
    assert (model['neck']['w_bits'], model['neck']['a_bits']) == (4, 3)
    conv_cfg = model['bbox_head']['conv_cfg']
    assert conv_cfg == dict(type='MBBConv', w_bits=4, a_bits=3)
    # only the bits changed
    expected = copy.deepcopy(RETINANET)
    for part in (expected['backbone'], expected['neck'],
                 expected['bbox_head']['conv_cfg']):
        part.update(w_bits=4, a_bits=3)
    assert model == expected


def test_set_model_precision_sets_a_parts_own_activation_bits_too():
    """MobileNetV2's ``expand_a_bits`` (its expand convs' activation bits)
    follows ``a_bits``: one call makes every layer of the part the same."""
    model = dict(type='RetinaNet',
                 backbone=dict(type='mmbinary.MBBMobileNetV2', w_bits=2,
                               a_bits=2, expand_a_bits=4),
                 neck=dict(type='mmbinary.MBBFPN', w_bits=2, a_bits=2))
    set_model_precision(model, 3, 2)
    assert model['backbone'] == dict(type='mmbinary.MBBMobileNetV2',
                                     w_bits=3, a_bits=2, expand_a_bits=2)
    assert 'expand_a_bits' not in model['neck']  # only where it was set
    options = precision_cfg_options(
        dict(backbone=dict(type='mmbinary.MBBMobileNetV2', w_bits=2,
                           a_bits=2, expand_a_bits=4)), 2, 2)
    assert 'model.backbone.expand_a_bits=2' in options


def test_layer_options_go_under_mbb_cfg_of_modules_only():
    model = copy.deepcopy(RETINANET)
    set_model_precision(model, 2, 2, dict(w_mode='paper', a_clip=1.0))
    assert model['backbone']['mbb_cfg'] == dict(w_mode='paper', a_clip=1.0)
    assert model['neck']['mbb_cfg'] == dict(w_mode='paper', a_clip=1.0)
    assert model['bbox_head']['conv_cfg'] == dict(
        type='MBBConv', w_bits=2, a_bits=2, w_mode='paper', a_clip=1.0)


def test_model_without_encoded_part_is_refused():
    with pytest.raises(ValueError, match='no encoded part'):
        set_model_precision(dict(backbone=dict(type='ResNet')), 2, 2)


def test_cfg_options_merge_to_the_same_config():
    options = precision_cfg_options(RETINANET, 3, [4, 2, 2, 4],
                                    dict(a_clip=1.0))
    assert 'model.bbox_head.conv_cfg.w_bits=3' in options
    assert 'model.backbone.mbb_cfg.a_clip=1.0' in options
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parsed = parser.parse_args(['--cfg-options', *options]).cfg_options
    from mmengine.config import Config
    cfg = Config(dict(model=copy.deepcopy(RETINANET)))
    cfg.merge_from_dict(parsed)
    expected = copy.deepcopy(RETINANET)
    set_model_precision(expected, 3, [4, 2, 2, 4], dict(a_clip=1.0))
    assert cfg.model.to_dict() == expected


def test_float_model_config_uses_the_stock_parts():
    twin = float_model_config(RETINANET)
    assert twin['backbone'] == dict(type='mmdet.ResNet', depth=18)
    assert twin['neck'] == dict(
        type='mmdet.FPN', in_channels=[64, 128, 256, 512], out_channels=16,
        num_outs=5)
    assert twin['bbox_head']['conv_cfg'] is None
    assert precision_parts(twin) == []
    assert RETINANET['backbone']['type'] == 'mmbinary.MBBResNet'  # unchanged
