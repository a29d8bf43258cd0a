# Copyright (c) mmbinary contributors. All rights reserved.
"""Per-level batch norm in shared heads: one packed weight, one folded
epilogue per level, bit-exact against the integer reference."""
import pytest
import torch

from mmbinary.models import MBBConv2d
from mmbinary.models.heads import (MBBRetinaHead, MBBRPNHead,
                                   PackedPerLevelMBBConv2d,
                                   PerLevelNormMBBConv2d)
from mmbinary.models.packing import (apply_packed_layout, convert_to_packed,
                                     packed_layout)

try:
    from mmbinary.ops.mbb_conv2d import mbb_conv2d_accumulate_reference
except ImportError:  # pragma: no cover - moved with the format module
    from mmbinary.ops.mbb_conv2d_reference import \
        mbb_conv2d_accumulate_reference

LEVELS = 3


def level_inputs(channels: int, seed: int = 0):
    """One input per level, each with its own statistics."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, channels, 8 - level, 9 - level, generator=generator) *
        (1 + level) + level for level in range(LEVELS)
    ]


def trained_layer(a_mode: str = 'signed') -> PerLevelNormMBBConv2d:
    torch.manual_seed(0)
    conv = MBBConv2d(5, 6, 3, padding=1, w_bits=2, a_bits=2, a_mode=a_mode)
    layer = PerLevelNormMBBConv2d.from_mbb(conv, LEVELS)
    layer.train()
    inputs = level_inputs(5)
    for _ in range(2):  # identity init, then running statistics move
        for level, x in enumerate(inputs):
            layer(x.abs() if a_mode == 'unsigned' else x, level)
    for norm in layer.norms:  # give every level its own affine part
        norm.weight.data.uniform_(0.5, 2.0)
        norm.bias.data.uniform_(-1.0, 1.0)
    return layer.eval()


@pytest.mark.parametrize('a_mode', ['signed', 'unsigned'])
def test_packed_per_level_conv_is_bit_exact_per_level(a_mode):
    layer = trained_layer(a_mode)
    packed = PackedPerLevelMBBConv2d.from_mbb(layer)
    codes, _ = layer.weight_quantizer.codes(layer.weight)
    scales = set()
    for level, x in enumerate(level_inputs(5, seed=1)):
        x = x.abs() if a_mode == 'unsigned' else x
        out = packed(x, level)
        # the integer accumulators, exactly, through this level's epilogue
        _, a = layer.act_quantizer.codes(x)
        acc = mbb_conv2d_accumulate_reference(a, codes, layer.stride,
                                              layer.padding, layer.dilation,
                                              layer.groups)
        expected = acc.float() * packed.level_scale[level].view(
            1, -1, 1, 1) + packed.level_bias[level].view(1, -1, 1, 1)
        assert torch.equal(out, expected)
        with torch.no_grad():
            reference = layer(x, level)
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
        scales.add(tuple(packed.level_scale[level].tolist()))
    assert len(scales) == LEVELS  # one epilogue per level


def test_norms_start_as_the_identity():
    torch.manual_seed(0)
    conv = MBBConv2d(4, 4, 1, w_bits=4, a_bits=4, a_mode='signed')
    layer = PerLevelNormMBBConv2d.from_mbb(conv, 2).train()
    x = torch.randn(2, 4, 5, 5) * 3 + 1
    out = layer(x, 1)
    torch.testing.assert_close(out, conv(x), rtol=1e-4, atol=1e-4)
    assert layer.norm_initialized.tolist() == [False, True]
    with pytest.raises(ValueError, match='level must be an integer in 0..1'):
        layer(x, 2)


@pytest.fixture(autouse=True)
def mmdet_scope():
    """Heads build their losses and coders from mmdet's registries, whatever
    scope an earlier test left current."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def retina_head(per_level_norm=True, num_levels=LEVELS):
    return MBBRetinaHead(
        num_classes=1,
        in_channels=8,
        feat_channels=8,
        stacked_convs=2,
        w_bits=2,
        a_bits=2,
        per_level_norm=per_level_norm,
        num_levels=num_levels,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128][:num_levels]))


def features(seed=0):
    return tuple(level_inputs(8, seed))


def test_retina_head_packs_with_one_epilogue_per_level_and_round_trips():
    torch.manual_seed(0)
    head = retina_head().train()
    for _ in range(2):
        head(features())
    head.eval()
    with torch.no_grad():
        reference = head(features(1))
    packed = convert_to_packed(head)
    towers = list(packed.cls_convs) + list(packed.reg_convs)
    assert all(isinstance(stage.conv, PackedPerLevelMBBConv2d)
               for stage in towers)
    with torch.no_grad():
        out = packed(features(1))
    for ours, theirs in zip(out[0] + out[1], reference[0] + reference[1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3)
    # a fresh head takes the packed layout and the packed state dict
    fresh = apply_packed_layout(retina_head(), packed_layout(packed))
    fresh.load_state_dict(packed.state_dict(), strict=True)
    with torch.no_grad():
        again = fresh(features(1))
    for ours, theirs in zip(again[0] + again[1], out[0] + out[1]):
        assert torch.equal(ours, theirs)


def test_per_level_checkpoint_loads_only_with_the_same_levels():
    state = retina_head().state_dict()
    with pytest.raises(ValueError, match='levels \\[0, 1, 2\\].*5 levels'):
        retina_head(num_levels=5).load_state_dict(state)
    with pytest.raises(ValueError, match='per_level_norm=False'):
        retina_head(per_level_norm=False).load_state_dict(state,
                                                          strict=False)
    retina_head().load_state_dict(state, strict=True)
    # a float head's checkpoint (no norms) loads into a per-level head
    float_state = retina_head(per_level_norm=False).state_dict()
    missing = retina_head().load_state_dict(float_state, strict=False)
    assert all('norm' in key for key in missing.missing_keys)
    assert not missing.unexpected_keys


def test_retina_head_refuses_other_numbers_of_levels():
    head = retina_head()
    with pytest.raises(ValueError, match='3 levels, got 2 feature maps'):
        head(features()[:2])


def test_rpn_head_per_level_norm_packs():
    torch.manual_seed(0)
    head = MBBRPNHead(in_channels=8, feat_channels=8, num_classes=1,
                      per_level_norm=True, num_levels=LEVELS,
                      anchor_generator=dict(
                          type='AnchorGenerator', scales=[8],
                          ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16])).train()
    head(features())
    head.eval()
    with torch.no_grad():
        reference = head(features(1))
    convert_to_packed(head)
    assert isinstance(head.rpn_conv, PackedPerLevelMBBConv2d)
    with torch.no_grad():
        out = head(features(1))
    for ours, theirs in zip(out[0] + out[1], reference[0] + reference[1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3)


def test_per_level_head_takes_the_chosen_kernel_bit_exactly():
    """choose_kernels replays a per-level conv with its level, and every
    kernel gives each level's popcount output bit for bit."""
    from mmbinary.models.packing import choose_kernels, int8_kernel_available
    from mmbinary.ops import ext_loaded
    if not ext_loaded():
        pytest.skip('needs the compiled extension')
    torch.manual_seed(0)
    head = retina_head().train()
    for _ in range(2):
        head(features())
    packed = convert_to_packed(head.eval())
    convs = [stage.conv for stage in
             list(packed.cls_convs) + list(packed.reg_convs)]
    with torch.no_grad():
        reference = packed(features(1))
    choices = choose_kernels(packed, lambda: packed(features(1)), repeat=1)
    assert {c.name for c in choices} >= {
        f'{tower}.{i}.conv' for tower in ('cls_convs', 'reg_convs')
        for i in range(2)}
    kernels = ['popcount'] + (['int8'] if int8_kernel_available() else [])
    for kernel in kernels:
        for conv in convs:
            conv.set_kernel(kernel)
        with torch.no_grad():
            out = packed(features(1))
        for ours, theirs in zip(out[0] + out[1],
                                reference[0] + reference[1]):
            assert torch.equal(ours, theirs)


def test_float_twin_of_a_per_level_head_keeps_its_levels():
    """The benchmark's float twin runs a per-level conv as its float conv
    then that level's norm."""
    from mmbinary.utils.benchmark import FloatPerLevelConv2d, float_twin
    torch.manual_seed(0)
    head = retina_head().train()
    for _ in range(2):
        head(features())
    head.eval()
    twin = float_twin(head)
    conv = head.cls_convs[0].conv
    float_conv = twin.cls_convs[0].conv
    assert isinstance(float_conv, FloatPerLevelConv2d)
    x = features(1)[1]
    with torch.no_grad():
        expected = conv.norms[1](torch.nn.functional.conv2d(
            x, conv.weight, conv.bias, conv.stride, conv.padding))
        assert torch.equal(float_conv(x, 1), expected)
        twin(features(1))  # the whole float head runs
