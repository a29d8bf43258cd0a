# Copyright (c) mmbinary contributors. All rights reserved.
"""RSign / RPReLU / real-valued shortcuts: training and packed forms agree
(integer accumulators exactly)."""
import pytest
import torch
from mmcv.cnn import ConvModule

from mmbinary.models import MBBConv2d
from mmbinary.models.layers.react import (PackedReActMBBConv2d, ReActMBBConv2d,
                                          RPReLU, add_react_structure,
                                          real_shortcut, shortcut_allowed)
from mmbinary.models.packing import (apply_packed_layout, convert_to_packed,
                                     packed_layout)

try:
    from mmbinary.ops.mbb_conv2d import mbb_conv2d_accumulate_reference
except ImportError:  # pragma: no cover - moved with the format module
    from mmbinary.ops.mbb_conv2d_reference import \
        mbb_conv2d_accumulate_reference


def calibrated(layer, x):
    layer.train()
    layer(x)
    return layer.eval()


@pytest.mark.parametrize('bits', [1, 2])
@pytest.mark.parametrize('in_channels, out_channels', [(4, 8), (8, 4),
                                                       (6, 6)])
def test_packed_react_conv_is_bit_exact(bits, in_channels, out_channels):
    torch.manual_seed(bits)
    conv = ReActMBBConv2d(in_channels, out_channels, 3, padding=1,
                          w_bits=bits, a_bits=bits, a_mode='signed',
                          shortcut=True)
    x = torch.randn(2, in_channels, 6, 7)
    calibrated(conv, x)
    conv.input_shift.data.uniform_(-0.5, 0.5)
    packed = PackedReActMBBConv2d.from_mbb(conv)
    x = torch.randn(2, in_channels, 6, 7)
    out = packed(x)
    shifted = x - conv.input_shift.view(1, -1, 1, 1)
    codes, _ = conv.weight_quantizer.codes(conv.weight)
    _, a = conv.act_quantizer.codes(shifted)
    acc = mbb_conv2d_accumulate_reference(a, codes, conv.stride, conv.padding,
                                          conv.dilation, conv.groups)
    epilogue = acc.float() * packed.out_scale.view(1, -1, 1, 1) + \
        packed.out_bias.view(1, -1, 1, 1)
    shortcut = real_shortcut(x, out_channels) * packed.shortcut_scale.view(
        1, -1, 1, 1)
    assert torch.equal(out, epilogue + shortcut)
    with torch.no_grad():
        reference = conv(x)
        branches = conv.forward_branches(x)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(branches, reference, rtol=1e-4, atol=1e-4)


def test_threshold_moves_the_sign():
    conv = ReActMBBConv2d(1, 1, 1, bias=False, w_bits=1, a_bits=1,
                          a_mode='signed', a_clip=1.0)
    conv.weight.data.fill_(1.0)
    x = torch.tensor([-0.2, 0.1, 0.3]).view(1, 1, 1, 3)
    with torch.no_grad():
        assert (conv(x).flatten() > 0).tolist() == [False, True, True]
        conv.input_shift.fill_(0.2)
        assert (conv(x).flatten() > 0).tolist() == [False, False, True]


def test_norm_after_a_react_conv_folds_into_epilogue_and_shortcut():
    torch.manual_seed(0)
    module = ConvModule(
        6, 6, 3, padding=1,
        conv_cfg=dict(type='ReActMBBConv', w_bits=2, a_bits=2,
                      a_mode='signed', shortcut=True),
        norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    x = torch.randn(2, 6, 5, 5)
    module.train()
    module(x)
    module.conv.input_shift.data.uniform_(-0.3, 0.3)
    module.norm.weight.data.uniform_(0.5, 2)
    module.norm.bias.data.uniform_(-1, 1)
    module.eval()
    with torch.no_grad():
        reference = module(x)
    layout_model = convert_to_packed(module)
    assert isinstance(module.conv, PackedReActMBBConv2d)
    with torch.no_grad():
        out = module(x)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    fresh = ConvModule(
        6, 6, 3, padding=1,
        conv_cfg=dict(type='ReActMBBConv', w_bits=2, a_bits=2,
                      a_mode='signed', shortcut=True),
        norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    apply_packed_layout(fresh, packed_layout(layout_model))
    fresh.load_state_dict(module.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), out)


def test_shortcut_needs_a_geometry_that_allows_it():
    assert shortcut_allowed(4, 8, 3, 1, 1, 1, 1)
    assert not shortcut_allowed(4, 6, 1, 1, 0, 1, 1)
    assert not shortcut_allowed(4, 4, 3, 2, 1, 1, 1)
    assert not shortcut_allowed(4, 4, 3, 1, 0, 1, 1)
    with pytest.raises(ValueError, match='shortcut=True needs stride 1'):
        ReActMBBConv2d(4, 4, 3, stride=2, padding=1, shortcut=True)


def test_rprelu():
    layer = RPReLU(2)
    layer.shift_in.data = torch.tensor([0.5, 0.0])
    layer.slope.data = torch.tensor([0.1, 0.2])
    layer.shift_out.data = torch.tensor([1.0, -1.0])
    x = torch.tensor([[0.0, 2.0], [-1.0, 3.0]]).view(1, 2, 2, 1)
    expected = torch.tensor([[-0.05 + 1, 1.5 + 1], [-0.2 - 1, 3.0 - 1]])
    torch.testing.assert_close(layer(x).view(2, 2), expected)


def test_add_react_structure_where_allowed():
    convs = torch.nn.Sequential(
        ConvModule(4, 8, 1, conv_cfg=dict(type='MBBConv', a_mode='signed'),
                   norm_cfg=dict(type='BN')),
        ConvModule(8, 6, 1, conv_cfg=dict(type='MBBConv', a_mode='signed'),
                   norm_cfg=dict(type='BN')))
    assert add_react_structure(convs) == 2
    assert [type(m.conv) for m in convs] == [ReActMBBConv2d] * 2
    assert [m.conv.shortcut for m in convs] == [True, False]
    assert all(isinstance(m.activate, RPReLU) for m in convs)
    _assert_packs_like_unpacked(convs, torch.randn(2, 4, 5, 5), tol=1e-4)


def _assert_packs_like_unpacked(module: torch.nn.Module,
                                x: torch.Tensor = None,
                                tol: float = 1e-3) -> None:
    """One training-mode forward on ``x`` (default (2, 3, 64, 64): clips,
    signs, norms), then the eval outputs (a tensor or a tuple of them)
    before and after ``convert_to_packed`` agree within ``tol``."""
    x = torch.randn(2, 3, 64, 64) if x is None else x
    module.train()
    module(x)
    module.eval()
    with torch.no_grad():
        reference = module(x)
    convert_to_packed(module)
    with torch.no_grad():
        out = module(x)
    if isinstance(out, torch.Tensor):
        out, reference = (out, ), (reference, )
    assert len(out) == len(reference)
    for ours, theirs in zip(out, reference):
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_react_backbone_builds_and_packs():
    from mmbinary.models.backbones.react_mobilenet_v2 import \
        ReActMBBMobileNetV2
    torch.manual_seed(0)
    backbone = ReActMBBMobileNetV2(w_bits=2, a_bits=2, widen_factor=0.25,
                                   out_indices=(2, 4))
    react = [m for m in backbone.modules() if isinstance(m, ReActMBBConv2d)]
    plain = [m for m in backbone.modules() if type(m) is MBBConv2d]
    assert react and not plain
    assert any(m.shortcut for m in react) and not all(m.shortcut
                                                      for m in react)
    assert any(isinstance(m, RPReLU) for m in backbone.modules())
    _assert_packs_like_unpacked(backbone)
    with pytest.raises(ValueError, match="unknown keys \\['nope'\\]"):
        ReActMBBMobileNetV2(react_cfg=dict(nope=1))


def test_rsign_only_backbone_at_2_bits_packs():
    """``react_cfg=dict(rsign=True, rprelu=False, shortcut=False)`` at W2A2
    (the fifteenth accuracy round's backbone): every conv learns its input
    thresholds and nothing else changes; packed == unpacked."""
    from mmbinary.models.backbones.react_mobilenet_v2 import \
        ReActMBBMobileNetV2
    torch.manual_seed(0)
    backbone = ReActMBBMobileNetV2(
        w_bits=2, a_bits=2, widen_factor=0.25, out_indices=(2, 4),
        react_cfg=dict(rsign=True, rprelu=False, shortcut=False))
    react = [m for m in backbone.modules() if isinstance(m, ReActMBBConv2d)]
    assert react and all(m.input_shift is not None for m in react)
    assert not any(m.shortcut for m in react)
    assert not any(isinstance(m, RPReLU) for m in backbone.modules())
    for conv in react:  # thresholds away from their zero initialization
        conv.input_shift.data.uniform_(-0.3, 0.3)
    _assert_packs_like_unpacked(backbone)
