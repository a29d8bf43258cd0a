# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed activations between the convs of residual blocks: whole packed
backbones give exactly the layer-by-layer outputs."""
import pytest
import torch
from torch import nn

from mmbinary.models.backbones import MBBResNet
from mmbinary.models.packing import ChannelsLastMaxPool2d, convert_to_packed
from mmbinary.models.packing.packed_flow import (disable_packed_flow,
                                                 enable_packed_flow)

pytestmark = pytest.mark.ext


def trained_backbone(depth, bits, signed_norms=True):
    torch.manual_seed(depth + bits)
    model = MBBResNet(depth=depth, w_bits=bits, a_bits=bits, base_channels=16)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and signed_norms:
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(-1.0, 1.0)
    return model


@pytest.mark.parametrize('depth', [18, 50])
@pytest.mark.parametrize('bits', [1, 2, 4])
def test_flow_equals_layer_by_layer(depth, bits):
    model = convert_to_packed(trained_backbone(depth, bits))
    flowing = enable_packed_flow(model)  # already on: idempotent
    assert len(flowing) == (8 if depth == 18 else 16)
    x = torch.randn(2, 3, 48, 72)
    with torch.no_grad():
        flow = model(x)
        disable_packed_flow(model)
        layerwise = model(x)
    assert len(flow) == len(layerwise) == 4
    for a, b in zip(flow, layerwise):
        assert torch.equal(a, b)


def test_flow_with_shortcuts_at_their_own_bits_equals_layer_by_layer():
    # A W1A1 body with W4A8 shortcut convs: the block input is packed at
    # 1 bit for conv1 and at 8 bits for the shortcut, both exactly.
    torch.manual_seed(0)
    model = MBBResNet(depth=50, w_bits=1, a_bits=1, base_channels=16,
                      encode_shortcut=True, shortcut_bits=(4, 8))
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    model = convert_to_packed(model)
    assert len(enable_packed_flow(model)) == 16
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        flow = model(x)
        disable_packed_flow(model)
        layerwise = model(x)
    for a, b in zip(flow, layerwise):
        assert torch.equal(a, b)


def test_flow_propagates_nan_through_the_layer_path():
    model = convert_to_packed(trained_backbone(18, 2))
    x = torch.randn(1, 3, 32, 32)
    x[0, 0, 5, 5] = float('nan')
    with torch.no_grad():
        flow = model(x)
        disable_packed_flow(model)
        layerwise = model(x)
    for a, b in zip(flow, layerwise):
        assert a.isnan().any()
        assert torch.equal(a.isnan(), b.isnan())


def test_blocks_that_cannot_flow_keep_their_forward():
    model = trained_backbone(18, 2)
    assert enable_packed_flow(model) == []  # nothing packed yet


def test_blocks_hand_the_next_block_its_words():
    model = convert_to_packed(trained_backbone(50, 2))
    stage = model.layer1
    x = torch.randn(1, 16, 20, 24)
    with torch.no_grad():
        out = stage[0](x)
        handed = out._mmbinary_next_words
        conv1 = stage[1].conv1
        assert handed[0] is stage[1]
        assert torch.equal(
            handed[2],
            torch.ops.mmbinary.mbb_quantize_pack(out, conv1.a_bits,
                                                 float(conv1.inv_step),
                                                 conv1.signed, 1))
        # A stage's last block hands the next stage's first block its
        # words; the last stage's last block has no one to hand words to.
        end = stage[2](stage[1](out))
        handed = end._mmbinary_next_words
        conv1 = model.layer2[0].conv1
        assert handed[0] is model.layer2[0]
        assert torch.equal(
            handed[2],
            torch.ops.mmbinary.mbb_quantize_pack(end, conv1.a_bits,
                                                 float(conv1.inv_step),
                                                 conv1.signed, 1))
        last = model.layer4[-1]
        x = torch.randn(1, last.conv1.in_channels, 3, 3)
        assert not hasattr(last(x), '_mmbinary_next_words')


def test_changed_tensor_is_packed_again():
    """Words handed on a tensor changed in place since are not used."""
    model = convert_to_packed(trained_backbone(50, 2))
    stage = model.layer1
    x = torch.randn(1, 16, 20, 24)
    with torch.no_grad():
        out = stage[0](x)
        out.mul_(0.5)
        flow = stage[1](out)
        disable_packed_flow(model)
        layerwise = stage[1](out)
    assert torch.equal(flow, layerwise)


class Towers(nn.Module):
    """A dense head's tower (ModuleList run in sequence) and a Sequential
    of ConvModules with ReLU6 / no activation, all MBB."""

    def __init__(self):
        super().__init__()
        from mmcv.cnn import ConvModule
        mbb = dict(type='MBBConv', w_bits=2, a_bits=2)
        self.cls_convs = nn.ModuleList(
            ConvModule(8 if i == 0 else 16, 16, 3, padding=1, conv_cfg=mbb,
                       norm_cfg=dict(type='BN')) for i in range(3))
        self.block = nn.Sequential(
            ConvModule(16, 24, 1, conv_cfg=mbb, norm_cfg=dict(type='BN'),
                       act_cfg=dict(type='ReLU6')),
            ConvModule(24, 16, 3, padding=1, conv_cfg=mbb,
                       norm_cfg=dict(type='BN'), act_cfg=None))

    def forward(self, x):
        for conv in self.cls_convs:
            x = conv(x)
        return self.block(x)


def test_conv_modules_flow_like_layer_by_layer():
    torch.manual_seed(0)
    model = Towers()
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 8, 12, 14))
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.weight.data.uniform_(-1.0, 1.0)
    convert_to_packed(model)
    flowing = enable_packed_flow(model)
    assert len(flowing) == 5
    x = torch.randn(1, 8, 12, 14)
    with torch.no_grad():
        first = model.cls_convs[0](x)
        assert first._mmbinary_next_words[0] is model.cls_convs[1]
        flow = model(x)
        disable_packed_flow(model)
        layerwise = model(x)
    assert torch.equal(flow, layerwise)


def _encoded_stem_backbone():
    torch.manual_seed(3)
    model = MBBResNet(depth=18, w_bits=2, a_bits=2, base_channels=16,
                      encode_stem=True, stem_bits=8)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    return convert_to_packed(model)


def _stem_kernels():
    from mmbinary.models.packing import int8_kernel_available
    return ['popcount'] + (['int8-im2col'] if int8_kernel_available() else
                           [])


@pytest.mark.parametrize('kernel', _stem_kernels())
@pytest.mark.parametrize('layout',
                         [torch.contiguous_format, torch.channels_last])
def test_encoded_stem_applies_its_relu_in_the_epilogue(layout, kernel,
                                                       monkeypatch):
    """The packed stem conv runs the ReLU after it in its epilogue (and on
    the im2col integer kernel the max pool too) and the ReLU and max-pool
    modules pass that tensor on: no ReLU runs in the flow (the blocks' are
    in their epilogues too), no max pool on the im2col kernel, the outputs
    equal the layer-by-layer ones bit for bit, and disabling the flow
    gives both back."""
    model = _encoded_stem_backbone()
    model.conv1.set_kernel(kernel)
    assert 'conv1' in enable_packed_flow(model)
    assert type(model.maxpool) is ChannelsLastMaxPool2d
    x = torch.randn(2, 3, 40, 56).contiguous(memory_format=layout)
    with torch.no_grad():
        stem_out = model.conv1(x)
    handed = getattr(stem_out, '_mmbinary_next_words', None)
    if kernel == 'int8-im2col':  # pooled: the first block's words too
        first = model.layer1[0]
        assert handed[0] is first
        assert torch.equal(
            handed[2],
            torch.ops.mmbinary.mbb_quantize_pack(
                stem_out, first.conv1.a_bits, float(first.conv1.inv_step),
                first.conv1.signed))
    else:  # the max pool runs after it: no words
        assert handed is None
    calls = []
    for module_type, label in ((nn.ReLU, 'relu'),
                               (ChannelsLastMaxPool2d, 'pool')):
        real = module_type.forward
        monkeypatch.setattr(
            module_type, 'forward',
            lambda self, x, real=real, label=label: calls.append(label) or
            real(self, x))
    with torch.no_grad():
        flow = model(x)
        assert 'relu' not in calls
        assert ('pool' in calls) == (kernel == 'popcount')
        del calls[:]
        disable_packed_flow(model)
        layerwise = model(x)
    assert 'relu' in calls and 'pool' in calls  # layer by layer
    for a, b in zip(flow, layerwise):
        assert torch.equal(a, b)
    for module in (model.conv1, model.relu, model.maxpool):
        assert 'forward' not in module.__dict__


@pytest.mark.parametrize('kernel', _stem_kernels())
def test_encoded_stem_relu_and_pool_run_on_a_tensor_changed_since(kernel):
    model = _encoded_stem_backbone()
    model.conv1.set_kernel(kernel)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.conv1(x)
        assert torch.equal(model.relu(out), out)  # activated: passed on
        pooled = model.maxpool(out)
        assert (pooled is out) == (kernel == 'int8-im2col')
        out.sub_(1.0)  # changed since: the ReLU and the max pool run
        changed = out.clone()
        assert torch.equal(model.relu(out), changed.clamp(min=0))
        assert model.maxpool(out).shape[-1] < out.shape[-1]


def test_encoded_stem_propagates_nan_through_the_layer_path():
    model = _encoded_stem_backbone()
    x = torch.randn(1, 3, 32, 32)
    x[0, 1, 4, 4] = float('nan')
    with torch.no_grad():
        flow = model(x)
        disable_packed_flow(model)
        layerwise = model(x)
    for a, b in zip(flow, layerwise):
        assert torch.equal(a.isnan(), b.isnan())


class ResNetFPN(nn.Module):
    """A detector's feature extractor, as mmdet's ``extract_feat``."""

    def __init__(self, start_level: int):
        super().__init__()
        from mmdet.models.necks import FPN
        torch.manual_seed(start_level)
        self.backbone = MBBResNet(depth=50, w_bits=2, a_bits=2,
                                  base_channels=16)
        self.neck = FPN(in_channels=[64, 128, 256, 512], out_channels=16,
                        start_level=start_level, add_extra_convs='on_input',
                        num_outs=5,
                        conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2))

    def forward(self, x):
        return self.neck(self.backbone(x))


@pytest.mark.parametrize('kernel', ['popcount', 'int8'])
@pytest.mark.parametrize('start_level', [0, 1])
def test_stage_outputs_carry_the_fpn_laterals_words(start_level, kernel,
                                                    monkeypatch):
    """A backbone stage's last conv also writes the words of the FPN
    lateral conv that reads the stage's output (its own bits, step and
    sign; in the epilogue on the integer kernel), and the last stage's
    those of the extra level's conv on it (RetinaNet's P6): the laterals
    and that conv pack nothing, and the features equal the layer-by-layer
    ones bit for bit."""
    from mmbinary.models.packing import int8_kernel_available
    from mmbinary.models.packing.packed_layers import PackedMBBConv2d
    if kernel == 'int8' and not int8_kernel_available():
        pytest.skip('no integer kernel on this CPU or build')
    model = ResNetFPN(start_level)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    convert_to_packed(model)
    for module in model.modules():
        if isinstance(module, PackedMBBConv2d):
            module.set_kernel(kernel if module.int8_unsupported() is None
                              else 'popcount')
    enable_packed_flow(model)
    stages = [model.backbone.layer1, model.backbone.layer2,
              model.backbone.layer3, model.backbone.layer4]
    laterals = model.neck.lateral_convs
    for i, lateral in enumerate(laterals):
        assert stages[i + start_level][-1].__dict__[
            '_mmbinary_side_unit'] is lateral
    extra = model.neck.fpn_convs[len(laterals)]
    assert stages[-1][-1].__dict__['_mmbinary_next_block'] is extra
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        outs = model.backbone(x)
        for i, lateral in enumerate(laterals):
            out = outs[i + start_level]
            side = out._mmbinary_side_words
            conv = lateral.conv
            assert side[0] is lateral
            assert torch.equal(
                side[2],
                torch.ops.mmbinary.mbb_quantize_pack(
                    out, conv.a_bits, float(conv.inv_step), conv.signed))
        handed = outs[-1]._mmbinary_next_words
        assert handed[0] is extra
        assert torch.equal(
            handed[2],
            torch.ops.mmbinary.mbb_quantize_pack(
                outs[-1], extra.conv.a_bits, float(extra.conv.inv_step),
                extra.conv.signed))
        packed_floats = []
        real = PackedMBBConv2d.run_float
        monkeypatch.setattr(
            PackedMBBConv2d, 'run_float',
            lambda self, *args, **kwargs: packed_floats.append(self) or
            real(self, *args, **kwargs))
        flow = model(x)
        assert not any(module.conv in packed_floats
                       for module in list(laterals) + [extra])
        disable_packed_flow(model)
        assert all('_mmbinary_side_unit' not in stage[-1].__dict__
                   for stage in stages)
        layerwise = model(x)
    for a, b in zip(flow, layerwise):
        assert torch.equal(a, b)


def test_side_words_arguments_are_checked():
    from mmbinary.models.packing.packed_layers import side_words_buffer
    model = ResNetFPN(1)
    model.train()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    model.eval()
    convert_to_packed(model)
    conv3 = model.backbone.layer2[-1].conv3
    lateral = model.neck.lateral_convs[0].conv
    words = torch.ops.mmbinary.mbb_quantize_pack(
        torch.rand(1, conv3.in_channels, 5, 6), conv3.a_bits,
        float(conv3.inv_step), conv3.signed)
    with pytest.raises(ValueError, match='go together'):
        conv3.run_words(words, side_conv=lateral)
    conv3.set_kernel('popcount')
    side = side_words_buffer((1, conv3.out_channels, 5, 6), lateral)
    with pytest.raises(ValueError, match='float_out=True'):
        conv3.run_words(words, float_out=False, next_conv=lateral,
                        side_conv=lateral, side_words=side)
    out, _ = conv3.run_words(words, side_conv=lateral, side_words=side)
    assert torch.equal(
        side,
        torch.ops.mmbinary.mbb_quantize_pack(out, lateral.a_bits,
                                             float(lateral.inv_step),
                                             lateral.signed))
