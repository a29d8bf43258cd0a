# Copyright (c) mmbinary contributors. All rights reserved.
"""Every config in configs/ builds under its scope, has MBB layers exactly
where expected, and runs loss and predict on tiny CPU inputs; stock mmdet
and mmseg configs take ``conv_cfg=dict(type='MBBConv')`` from the command
line."""
import argparse
import fnmatch
import os
import os.path as osp
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from torch import nn

import mmbinary.models.backbones  # noqa: F401
import mmbinary.models.heads  # noqa: F401
import mmbinary.models.necks  # noqa: F401
from mmbinary.models.layers import MBBConv2d, MBBLinear
from mmbinary.models.precision import (float_model_config, precision_parts,
                                       set_model_precision)
from mmbinary.utils.scope import PART_BITS_SUFFIXES, load_tool_config

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')

# Layers that stay float: stem, shortcuts and the final predictors.
DET_FLOAT = ['backbone.conv1', 'backbone.layer*.0.downsample.0']
SEG_FLOAT = [
    'backbone.stem.0', 'backbone.stem.3', 'backbone.stem.6',
    'backbone.layer*.0.downsample.0', '*_head.conv_seg'
]
RETINANET = dict(
    scope='mmdet',
    mbb=48 + 8 + 8,  # blocks + FPN (3 lateral, 5 output) + 2x4 head convs
    float=DET_FLOAT + ['bbox_head.retina_cls', 'bbox_head.retina_reg'])
CONFIGS = {
    'retinanet_r50_mbb_w2a2_coco.py':
    dict(RETINANET, bits=(2, 2)),
    'retinanet_r50_mbb_w1a1_coco.py':
    dict(RETINANET, bits=(1, 1)),
    'retinanet_r50_mbb_w4a4_coco.py':
    dict(RETINANET, bits=(4, 4)),
    'faster-rcnn_r50_mbb_w2a2_coco.py':
    dict(
        scope='mmdet',
        bits=(2, 2),
        mbb=48 + 8 + 1 + 2,  # blocks, FPN, RPN conv, shared FCs
        float=DET_FLOAT + [
            'rpn_head.rpn_cls', 'rpn_head.rpn_reg',
            'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg'
        ],
        # fewer RoIs through the box head keep the test quick on CPUs
        options=[
            'model.train_cfg.rpn_proposal.max_per_img=100',
            'model.train_cfg.rcnn.sampler.num=64',
            'model.test_cfg.rpn.max_per_img=100'
        ]),
    'deeplabv3_r50_mbb_w2a2_cityscapes.py':
    dict(scope='mmseg', bits=(2, 2), mbb=48 + 6 + 1, float=SEG_FLOAT),
    'deeplabv3_r50_mbb_w2a2_voc12aug.py':
    dict(scope='mmseg', bits=(2, 2), mbb=48 + 6 + 1, float=SEG_FLOAT),
}


def load_config(path: str, options: List[str] = ()) -> Config:
    """``Config.fromfile`` plus ``--cfg-options`` parsed as the tools do."""
    cfg = Config.fromfile(path)
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(
            parser.parse_args(['--cfg-options', *options]).cfg_options)
    return cfg


def build_model(cfg: Config) -> nn.Module:
    scope = cfg.default_scope
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    return model


def layers_by_kind(model: nn.Module) -> Dict[str, List[str]]:
    kinds = dict(mbb=[], float=[])
    for name, module in model.named_modules():
        if isinstance(module, (MBBConv2d, MBBLinear)):
            kinds['mbb'].append(name)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            kinds['float'].append(name)
    return kinds


def run_det(model: nn.Module) -> None:
    """Loss and predict of a detector on two 3x64x64 images."""
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(
        2, [(3, 64, 64)] * 2, num_items=[2, 1], num_classes=80)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(
        sum(value) if isinstance(value, list) else value
        for key, value in losses.items() if 'loss' in key)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(packed, False),
                        mode='predict')
    assert len(results) == 2
    assert results[0].pred_instances.bboxes.shape[-1] == 4


def seg_samples(num_classes: int, size: int = 64) -> list:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, size, size)))
        samples.append(sample)
    return samples


def run_seg(model: nn.Module) -> None:
    """Loss and inference of a segmentor on two 3x64x64 images."""
    num_classes = model.decode_head.num_classes
    inputs = torch.randn(2, 3, 64, 64)
    samples = seg_samples(num_classes)
    model.train()
    losses = model(inputs, samples, mode='loss')
    total = losses['decode.loss_ce'] + losses['aux.loss_ce']
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        results = model(inputs, samples, mode='predict')
    assert results[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert int(results[0].pred_sem_seg.data.max()) < num_classes


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_builds_encodes_and_runs(name):
    expected = CONFIGS[name]
    cfg = load_config(
        osp.join(CONFIG_DIR, name), expected.get('options', []))
    assert cfg.default_scope == expected['scope']
    assert cfg.custom_imports.imports == ['mmbinary']
    assert cfg.load_from is None
    # the precision is set once, at the top, and every part reads it
    assert (cfg.w_bits, cfg.a_bits) == expected['bits']
    for url in ('torchvision://', 'open-mmlab://'):
        assert url not in cfg.pretty_text
    model = build_model(cfg)

    kinds = layers_by_kind(model)
    assert len(kinds['mbb']) == expected['mbb']
    unexpected_float = [
        name for name in kinds['float'] if not any(
            fnmatch.fnmatch(name, pattern) for pattern in expected['float'])
    ]
    assert unexpected_float == []
    for pattern in expected['float']:
        assert fnmatch.filter(kinds['float'], pattern), pattern
    modules = dict(model.named_modules())
    for name in kinds['mbb']:
        layer = modules[name]
        assert (layer.w_bits, layer.a_bits) == expected['bits'], name

    if expected['scope'] == 'mmdet':
        run_det(model)
    else:
        run_seg(model)


def test_issue_configs_are_shipped():
    shipped = set(os.listdir(CONFIG_DIR))
    assert set(CONFIGS) <= shipped


def test_any_bits_from_the_command_line():
    """The docs' ``--cfg-options w_bits=3 a_bits=3``, without a new file:
    the tools set every encoded part."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options = parser.parse_args(
        ['--cfg-options', 'w_bits=3', 'a_bits=3']).cfg_options
    cfg = load_tool_config(
        osp.join(CONFIG_DIR, 'retinanet_r50_mbb_w2a2_coco.py'), options)
    model = build_model(cfg)
    layers = [
        m for m in model.modules() if isinstance(m, (MBBConv2d, MBBLinear))
    ]
    assert len(layers) == RETINANET['mbb']
    assert all((m.w_bits, m.a_bits) == (3, 3) for m in layers)


def test_mixed_precision_backbone_from_the_command_line():
    cfg = load_config(
        osp.join(CONFIG_DIR, 'retinanet_r50_mbb_w2a2_coco.py'),
        ['model.backbone.w_bits=[4,2,2,4]', 'model.backbone.encode_stem=True'])
    model = build_model(cfg)
    assert model.backbone.w_bits == (4, 2, 2, 4)
    assert isinstance(model.backbone.conv1, MBBConv2d)
    assert model.backbone.conv1.a_mode == 'signed'


@pytest.mark.parametrize('name, option, key', [
    ('retinanet_r50_mbb_w2a2_coco.py', 'model.backbone.w_bits=9', 'w_bits'),
    ('retinanet_r50_mbb_w2a2_coco.py', 'model.neck.a_bits=0', 'a_bits'),
    ('retinanet_r50_mbb_w2a2_coco.py', 'model.bbox_head.conv_cfg.w_bits=16',
     'w_bits'),
    ('faster-rcnn_r50_mbb_w2a2_coco.py',
     'model.roi_head.bbox_head.a_bits=12', 'a_bits'),
    ('deeplabv3_r50_mbb_w2a2_cityscapes.py',
     'model.backbone.a_bits=[2,2,2]', 'a_bits'),
])
def test_bad_bit_width_is_rejected_with_its_key(name, option, key):
    cfg = load_config(osp.join(CONFIG_DIR, name), [option])
    with pytest.raises(ValueError, match=key):
        build_model(cfg)


def test_heads_encode_final_layers_on_request():
    cfg = load_config(
        osp.join(CONFIG_DIR, 'faster-rcnn_r50_mbb_w2a2_coco.py'), [
            'model.rpn_head.encode_cls_reg=True',
            'model.roi_head.bbox_head.encode_cls_reg=True'
        ])
    model = build_model(cfg)
    for layer in (model.rpn_head.rpn_cls, model.rpn_head.rpn_reg,
                  model.roi_head.bbox_head.fc_cls,
                  model.roi_head.bbox_head.fc_reg):
        assert isinstance(layer, (MBBConv2d, MBBLinear))
        assert layer.a_mode == 'unsigned'
    fcs = model.roi_head.bbox_head.shared_fcs
    assert [fc.a_mode for fc in fcs] == ['signed', 'unsigned']
    assert model.rpn_head.rpn_conv.a_mode == 'signed'


def mbb_conv_cfg_options(*parts: str, bits: int = 2) -> List[str]:
    """The docs' --cfg-options that set an MBBConv ``conv_cfg`` on parts."""
    options = []
    for part in parts:
        options += [
            f'model.{part}.conv_cfg.type=MBBConv',
            f'model.{part}.conv_cfg.w_bits={bits}',
            f'model.{part}.conv_cfg.a_bits={bits}'
        ]
    return options


STOCK = {
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py':
    dict(
        options=mbb_conv_cfg_options('backbone', 'neck', 'bbox_head') +
        ['model.backbone.init_cfg=None'],
        # every backbone conv (stem and shortcuts too), FPN, head towers
        mbb=53 + 8 + 8,
        float=['bbox_head.retina_cls', 'bbox_head.retina_reg']),
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py':
    dict(
        options=mbb_conv_cfg_options('backbone', 'neck') +
        ['model.backbone.init_cfg=None'],
        mbb=53 + 8,
        # RPNHead and the FC box head take no conv_cfg: see MBBRPNHead
        # and MBBShared2FCBBoxHead.
        float=['rpn_head.*', 'roi_head.bbox_head.*']),
    'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py':
    dict(
        options=mbb_conv_cfg_options('backbone', 'decode_head',
                                     'auxiliary_head') +
        ['model.pretrained=None'],
        mbb=55 + 6 + 1,
        float=['*_head.conv_seg']),
}


@pytest.mark.parametrize('base', sorted(STOCK))
def test_stock_config_with_mbb_conv_cfg(base, tmp_path):
    expected = STOCK[base]
    path = tmp_path / 'stock.py'
    path.write_text(f'_base_ = {base!r}\n')
    cfg = load_config(str(path), expected['options'])
    model = build_model(cfg)
    kinds = layers_by_kind(model)
    assert len(kinds['mbb']) == expected['mbb']
    assert all(
        any(fnmatch.fnmatch(name, pattern) for pattern in expected['float'])
        for name in kinds['float'])
    modules = dict(model.named_modules())
    assert all(modules[name].w_bits == 2 for name in kinds['mbb'])
    if cfg.default_scope == 'mmdet':
        run_det(model)
    else:
        run_seg(model)


#: The MobileNetV2 configs (demo, Penn-Fudan study, own-data templates):
#: encoded layer counts and the scope. Backbone 1x1 convs (17 blocks, 16
#: with an expand conv, and the last conv for mmdet's) + FPN (3 lateral,
#: 5 output) + 2x2 head convs, or + 5 ASPP convs.
MNV2_CONFIGS = {
    'retinanet_mnv2_mbb_w2a2_trees.py': ('mmdet', 34 + 8 + 4),
    'pennfudan/retinanet_mnv2_mbb_w2a2_pennfudan.py': ('mmdet', 34 + 8 + 4),
    'own_data/retinanet_mnv2_mbb_coco-format.py': ('mmdet', 34 + 8 + 4),
    'pennfudan/deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py': ('mmseg', 34 + 5),
    'own_data/deeplabv3_mnv2-d8_mbb_folder-format.py': ('mmseg', 34 + 5),
}


def parameter_names(model: nn.Module) -> List[str]:
    """Parameter and buffer names without the MBB layers' own (the learned
    activation clips and quantizer state)."""
    mbb = {name for name, module in model.named_modules()
           if isinstance(module, (MBBConv2d, MBBLinear))}
    names = []
    for name in model.state_dict():
        parts = name.split('.')
        owners = ['.'.join(parts[:i]) for i in range(1, len(parts))]
        if any(owner in mbb for owner in owners) and parts[-1] not in (
                'weight', 'bias') or any(
                    owner in mbb for owner in owners[:-1]):
            continue
        names.append(name)
    return sorted(names)


@pytest.mark.parametrize('name', sorted(MNV2_CONFIGS))
def test_mnv2_configs_precision_and_float_twin(name):
    scope, encoded = MNV2_CONFIGS[name]
    cfg = load_config(osp.join(CONFIG_DIR, name))
    assert cfg.default_scope == scope
    # the precision at the top is the one of every encoded layer
    assert (cfg.w_bits, cfg.a_bits) == (2, 2)
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg)
    kinds = layers_by_kind(model)
    assert len(kinds['mbb']) == encoded
    modules = dict(model.named_modules())
    assert {(modules[n].w_bits, modules[n].a_bits)
            for n in kinds['mbb']} == {(2, 2)}

    # one call sets every part
    parts = set_model_precision(cfg.model, 4, 3)
    assert parts == precision_parts(cfg.model)
    model = build_model(cfg)
    modules = dict(model.named_modules())
    assert {(modules[n].w_bits, modules[n].a_bits)
            for n in layers_by_kind(model)['mbb']} == {(4, 3)}

    # the float twin: no encoded layer, the same parameter names
    twin = build_model(Config(dict(cfg.to_dict(),
                                   model=float_model_config(cfg.model))))
    assert layers_by_kind(twin)['mbb'] == []
    assert parameter_names(twin) == parameter_names(model)


def shipped_configs() -> List[str]:
    """Every config under configs/ except the _base_ parts."""
    names = []
    for folder, _, files in os.walk(CONFIG_DIR):
        if '_base_' in folder.split(os.sep):
            continue
        names += [
            osp.relpath(osp.join(folder, name), CONFIG_DIR) for name in files
            if name.endswith('.py')
        ]
    return sorted(names)


@pytest.mark.parametrize('name', shipped_configs())
def test_top_level_precision_is_the_precision_of_every_part(name):
    """A config that sets ``w_bits``/``a_bits`` at its top has exactly those
    bits in every encoded part (a distiller's student included), so
    ``--cfg-options w_bits=N a_bits=N`` and the config agree."""
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    parts = precision_parts(cfg.model)
    if 'w_bits' not in cfg:
        assert parts == [], f'{name} has encoded parts but no top-level bits'
        return
    assert parts, f'{name} sets w_bits but has no encoded part'
    # a mixed-precision config names the parts that differ at its top
    # (backbone_a_bits = 4); every other part has w_bits / a_bits
    named = {key for key in cfg.keys() if key.endswith(PART_BITS_SUFFIXES)}
    for part in parts:
        node = cfg.model
        for key in part.split('.'):
            node = node[int(key)] if key.isdigit() else node[key]
        last = part.split('.')[-1]
        expected = tuple(
            cfg.get(f'{last}_{bits}', cfg[bits])
            for bits in ('w_bits', 'a_bits'))
        named -= {f'{last}_w_bits', f'{last}_a_bits'}
        assert (node['w_bits'], node['a_bits']) == expected, (name, part)
    assert not named, f'{name}: {sorted(named)} name no encoded part'


MIXED_CONFIGS = [
    'pennfudan/retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py',
    'pennfudan/retinanet_mnv2_mbb_w2a2_bb-a4_plbn_kd_pennfudan.py',
    'pennfudan/deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py',
    'pennfudan/deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_kd_pennfudan.py',
]


@pytest.mark.parametrize('name', MIXED_CONFIGS)
def test_mixed_precision_configs_build_with_their_bits(name):
    """The shipped mixed-precision models (2-bit weights, 4-bit backbone
    activations): the backbone's MBB convs are W2A4, every other MBB layer
    W2A2; ``--cfg-options w_bits=2 a_bits=2`` makes every layer W2A2."""
    path = osp.join(CONFIG_DIR, name)
    cfg = load_tool_config(path)
    # a distiller's student (its teacher checkpoint is the study's)
    cfg.model = cfg.model.get('architecture', cfg.model)
    # no pretrained weights on a fresh clone: build from random init
    cfg.model.backbone.init_cfg = None
    bits = {}
    for module_name, module in build_model(cfg).named_modules():
        if isinstance(module, MBBConv2d):
            part = module_name.split('.')[0]
            bits.setdefault(part, set()).add((module.w_bits, module.a_bits))
    assert bits.pop('backbone') == {(2, 4)}, name
    assert bits and all(value == {(2, 2)} for value in bits.values()), bits
    uniform = load_tool_config(path, dict(w_bits=2, a_bits=2))
    assert 'backbone_a_bits' not in uniform
    assert all((node['w_bits'], node['a_bits']) == (2, 2)
               for node in (_node(uniform.model, part)
                            for part in precision_parts(uniform.model)))


def _node(model_cfg, part: str):
    node = model_cfg
    for key in part.split('.'):
        node = node[int(key)] if key.isdigit() else node[key]
    return node
