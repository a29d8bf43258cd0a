# Copyright (c) mmbinary contributors. All rights reserved.
import pytest
import torch
from mmdet.models.backbones import ResNet
from mmseg.models.backbones import ResNetV1c
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmbinary.models.backbones import MBBResNet, MBBResNetV1c
from mmbinary.models.layers import MBBConv2d

# conv1..conv3 of every block: BasicBlock has 2, Bottleneck 3.
BLOCK_CONVS = {18: 2 * 8, 34: 2 * 16, 50: 3 * 16, 101: 3 * 33}


def mbb_convs(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, MBBConv2d)]


def float_convs(module: nn.Module):
    return [m for m in module.modules() if type(m) is nn.Conv2d]


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_block_convs_encoded_stem_and_shortcuts_float(depth):
    model = MBBResNet(depth=depth)
    assert len(mbb_convs(model)) == BLOCK_CONVS[depth]
    # the stem conv and one shortcut conv per stage (18/34: stages 2-4)
    shortcuts = 3 if depth in (18, 34) else 4
    assert len(float_convs(model)) == 1 + shortcuts
    assert type(model.conv1) is nn.Conv2d
    for conv in mbb_convs(model):
        assert (conv.w_bits, conv.a_bits, conv.a_mode) == (2, 2, 'unsigned')


def test_forward_shapes_and_backward():
    model = MBBResNet(depth=18, w_bits=1, a_bits=1)
    model.train()
    outs = model(torch.rand(2, 3, 32, 32))
    assert [tuple(out.shape) for out in outs] == [(2, 64, 8, 8),
                                                  (2, 128, 4, 4),
                                                  (2, 256, 2, 2),
                                                  (2, 512, 1, 1)]
    sum(out.sum() for out in outs).backward()
    conv = model.layer2[0].conv1
    assert conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all()


def test_per_stage_bits_mixed_precision():
    model = MBBResNet(
        depth=18, w_bits=[1, 2, 3, 4], a_bits=(4, 3, 2, 1))
    assert model.w_bits == (1, 2, 3, 4)
    assert model.a_bits == (4, 3, 2, 1)
    for stage in range(4):
        for conv in mbb_convs(getattr(model, f'layer{stage + 1}')):
            assert conv.w_bits == stage + 1
            assert conv.a_bits == 4 - stage


def test_encode_stem_and_shortcut_on_request():
    model = MBBResNet(
        depth=50, w_bits=[4, 2, 2, 2], encode_stem=True,
        encode_shortcut=True)
    assert float_convs(model) == []
    assert isinstance(model.conv1, MBBConv2d)
    assert model.conv1.a_mode == 'signed'
    assert model.conv1.w_bits == 4
    shortcut = model.layer3[0].downsample[0]
    assert isinstance(shortcut, MBBConv2d)
    assert (shortcut.w_bits, shortcut.a_mode) == (2, 'unsigned')


@pytest.mark.parametrize('backbone', [MBBResNet, MBBResNetV1c])
def test_stem_and_shortcuts_at_their_own_bits(backbone):
    model = backbone(
        depth=50, w_bits=1, a_bits=1, encode_stem=True, stem_bits=(4, 8),
        encode_shortcut=True, shortcut_bits=3)
    assert float_convs(model) == []
    stem = [m for m in model.modules() if isinstance(m, MBBConv2d)][:1]
    assert (stem[0].w_bits, stem[0].a_bits, stem[0].a_mode) == (4, 8,
                                                                'signed')
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        shortcut = layer[0].downsample[0]
        assert (shortcut.w_bits, shortcut.a_bits) == (3, 3)
        assert shortcut.a_mode == 'unsigned'
        assert (layer[0].conv2.w_bits, layer[0].conv2.a_bits) == (1, 1)
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [out.shape[1] for out in outs] == [256, 512, 1024, 2048]


def test_float_resnet_state_dict_loads_strict():
    float_model = ResNet(depth=18)
    model = MBBResNet(depth=18)
    float_state = float_model.state_dict()
    model.load_state_dict(float_state, strict=True)
    own = model.state_dict()
    for key, value in float_state.items():
        assert torch.equal(own[key], value), key
    # torchvision layout: the same names, plus the classifier (ignored by
    # init_cfg=dict(type='Pretrained'), which loads non-strict).
    assert 'layer1.0.bn1.weight' in own and 'conv1.weight' in own


@pytest.mark.parametrize('frozen_stages', [-1, 1, 2])
def test_frozen_stages(frozen_stages):
    model = MBBResNet(depth=18, frozen_stages=frozen_stages, norm_eval=False)
    model.train()
    stem_frozen = frozen_stages >= 0
    assert all(p.requires_grad != stem_frozen
               for p in model.conv1.parameters())
    for stage in range(1, 5):
        layer = getattr(model, f'layer{stage}')
        frozen = stage <= frozen_stages
        params = list(layer.parameters())
        # the MBB convs' learned activation clips freeze with their stage
        assert any(p.dim() == 0 for p in params)
        assert all(p.requires_grad != frozen for p in params)
        assert all(m.training != frozen for m in layer.modules())


def test_norm_eval():
    model = MBBResNet(depth=18, norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert model.layer1[0].conv1.training
    model = MBBResNet(depth=18, norm_eval=False)
    model.train()
    assert all(m.training for m in model.modules()
               if isinstance(m, _BatchNorm))


@pytest.mark.parametrize('kwargs, key', [
    (dict(w_bits=9), 'w_bits'),
    (dict(a_bits=0), 'a_bits'),
    (dict(w_bits=2.0), 'w_bits'),
    (dict(w_bits=[2, 2, 9, 2]), 'w_bits[2]'),
    (dict(a_bits=[2, 2]), 'a_bits'),
    (dict(mbb_cfg=dict(a_mode='signed')), 'mbb_cfg'),
    (dict(shortcut_bits=8), 'shortcut_bits=8 needs encode_shortcut=True'),
    (dict(stem_bits=(4, 8)), 'stem_bits=.* needs encode_stem=True'),
    (dict(encode_shortcut=True, shortcut_bits=(4, 9)), 'shortcut_bits[1]'),
    (dict(encode_stem=True, stem_bits=(1, 2, 3)), 'stem_bits'),
])
def test_bad_options_are_rejected_by_name(kwargs, key):
    with pytest.raises(ValueError, match=key.replace('[', r'\[')):
        MBBResNet(depth=18, **kwargs)


def test_mbb_cfg_reaches_the_layers():
    model = MBBResNet(depth=18, mbb_cfg=dict(w_mode='paper'))
    assert model.layer1[0].conv1.weight_quantizer.mode == 'paper'


def test_built_from_mmdet_scope_with_prefix():
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(
            dict(type='mmbinary.MBBResNet', depth=18, w_bits=3, a_bits=1))
        assert isinstance(model, MBBResNet)
        assert model.w_bits == (3, ) * 4
        with pytest.raises(ValueError, match='w_bits'):
            MODELS.build(dict(type='mmbinary.MBBResNet', depth=18,
                              w_bits=0))


def test_resnet_v1c_dilated_and_loads_float_weights():
    kwargs = dict(
        depth=50,
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        contract_dilation=True)
    model = MBBResNetV1c(**kwargs)
    float_model = ResNetV1c(**kwargs)
    model.load_state_dict(float_model.state_dict(), strict=True)
    assert len(mbb_convs(model)) == BLOCK_CONVS[50]
    # deep stem (3 convs) and 4 shortcuts stay float
    assert len(float_convs(model)) == 3 + 4
    assert model.layer4[0].conv2.dilation == (2, 2)  # contracted
    assert model.layer4[1].conv2.dilation == (4, 4)
    model.eval()
    outs = model(torch.rand(1, 3, 32, 32))
    # output stride 8: stage 2 has stride 2, stages 3 and 4 are dilated
    assert [tuple(out.shape) for out in outs] == [(1, 256, 8, 8),
                                                  (1, 512, 4, 4),
                                                  (1, 1024, 4, 4),
                                                  (1, 2048, 4, 4)]


def test_resnet_v1c_stem_modes_when_encoded():
    model = MBBResNetV1c(depth=18, encode_stem=True, a_bits=[3, 2, 2, 2])
    stem = [m for m in model.stem if isinstance(m, MBBConv2d)]
    modes = [conv.a_mode for conv in stem]
    assert modes == ['signed', 'unsigned', 'unsigned']
    assert all(conv.a_bits == 3 for conv in stem)


def test_resnet_v1c_built_from_mmseg_scope():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(
            dict(type='mmbinary.MBBResNetV1c', depth=18, frozen_stages=1))
    assert isinstance(model, MBBResNetV1c)
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
