# Copyright (c) mmbinary contributors. All rights reserved.
"""Packed activations through MobileNetV2's inverted-residual blocks:
expand conv (words in) -> depthwise -> linear conv (+ shortcut in its
epilogue), words handed from block to block."""
import math
import types

import pytest
import torch
from torch import nn

from mmbinary.models.backbones import MBBDilatedMobileNetV2, MBBMobileNetV2
from mmbinary.models.packing import (PackedMBBConv2d, convert_to_packed,
                                     int8_kernel_available)
from mmbinary.models.packing import packed_flow as pf
from mmbinary.models.packing.packed_flow import (disable_packed_flow,
                                                 enable_packed_flow,
                                                 packed_flow_enabled)
from mmbinary.utils.benchmark import fold_batch_norms, to_channels_last

pytestmark = pytest.mark.ext

#: backbone class and its arguments.
BACKBONES = {
    'mmdet': (MBBMobileNetV2, dict(out_indices=(2, 4, 6))),
    'mmseg': (MBBDilatedMobileNetV2,
              dict(strides=(1, 2, 2, 1, 1, 1, 1),
                   dilations=(1, 1, 1, 2, 2, 4, 4),
                   out_indices=(1, 2, 4, 6))),
}
#: Blocks per stage of MobileNetV2 (layer1 .. layer7).
BLOCKS = (1, 2, 3, 4, 3, 3, 1)


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Batch norms with non-trivial scales and shifts (some negative)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.rand(shape, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(shape, generator=gen) * 1.5 +
                                     0.5)
            module.weight.data.copy_(torch.rand(shape, generator=gen) * 2 - 1)
            module.bias.data.copy_(torch.rand(shape, generator=gen) - 0.5)


def packed_backbone(kind: str, bits: int, fold: bool = False,
                    **options) -> nn.Module:
    """A calibrated MBB MobileNetV2, packed (the depthwise norms folded
    into their float convs too with ``fold``, as benchmark_model does)."""
    cls, kwargs = BACKBONES[kind]
    torch.manual_seed(bits)
    model = cls(w_bits=bits, a_bits=bits, **kwargs, **options)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    randomize_norms(model, bits)
    convert_to_packed(model)
    if fold:
        fold_batch_norms(model)
    return model


def blocks(model: nn.Module) -> list:
    return [(name, module) for name, module in model.named_modules()
            if type(module).__name__ == 'InvertedResidual']


def depthwise_with_the_op(model: nn.Module) -> None:
    """The layer-by-layer path with every block's depthwise ConvModule run
    by ``depthwise_pack`` (float out): the fused flow's reference."""
    for _, block in blocks(model):
        parts = pf._inverted_residual_parts(block)

        def forward(self, x, parts=parts.depthwise):
            return pf.depthwise_pack(parts, x, float_out=True)[0]

        parts.depthwise_module.forward = types.MethodType(
            forward, parts.depthwise_module)


def run(model: nn.Module, x: torch.Tensor) -> tuple:
    with torch.no_grad():
        return tuple(model(x))


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('bits', [1, 2, 4])
def test_flow_equals_layer_by_layer(monkeypatch, kind, bits):
    model = packed_backbone(kind, bits)
    flowing = enable_packed_flow(model, fuse_depthwise=False)
    names = [name for name, _ in blocks(model)]
    assert len(names) == sum(BLOCKS)
    assert set(names) <= set(flowing)
    calls = []
    flow_block = pf._flow_inverted_residual

    def counted(block, *args):
        calls.append(block)
        return flow_block(block, *args)

    monkeypatch.setattr(pf, '_flow_inverted_residual', counted)
    x = torch.randn(1, 3, 64, 64)
    flow = run(model, x)
    monkeypatch.undo()
    assert calls == [block for _, block in blocks(model)]
    disable_packed_flow(model)
    assert not packed_flow_enabled(model)
    layerwise = run(model, x)
    assert len(flow) == len(layerwise)
    for a, b in zip(flow, layerwise):
        assert torch.equal(a, b)


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
def test_flow_with_expand_convs_at_their_own_bits(kind):
    """``expand_a_bits=4`` in a W2A2 backbone: the flow hands each expand
    conv its 4-bit words and each projection its 2-bit words, equal to the
    layer-by-layer path bit for bit."""
    model = packed_backbone(kind, 2, expand_a_bits=4)
    convs = [module for module in model.modules()
             if isinstance(module, PackedMBBConv2d)]
    assert {conv.a_bits for conv in convs} == {2, 4}
    enable_packed_flow(model)
    x = torch.randn(1, 3, 64, 64)
    flow = run(model, x)
    disable_packed_flow(model)
    layerwise = run(model, x)
    for a, b in zip(flow, layerwise):
        assert torch.equal(a, b)


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('bits,fold', [(1, False), (2, False), (4, False),
                                       (2, True)])
def test_fused_depthwise_equals_the_layers_with_the_op(
        monkeypatch, kind, bits, fold):
    model = packed_backbone(kind, bits, fold)
    calls = []
    fused = pf.depthwise_pack

    def counted(*args, **kwargs):
        calls.append(kwargs.get('float_out', False))
        return fused(*args, **kwargs)

    x = torch.randn(1, 3, 64, 64)
    monkeypatch.setattr(pf, 'depthwise_pack', counted)
    enable_packed_flow(model, fuse_depthwise=True)
    flow = run(model, x)
    monkeypatch.undo()
    assert calls == [False] * sum(BLOCKS)  # words only, every block
    disable_packed_flow(model)
    layerwise = run(model, x)
    depthwise_with_the_op(model)
    reference = run(model, x)
    for a, b, c in zip(flow, reference, layerwise):
        assert torch.equal(a, b)
        # torch's conv and norm round a few depthwise floats differently.
        assert float((a - c).norm() / c.norm()) < 1e-3


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('bits,fold', [(1, True), (2, True), (2, False)])
@pytest.mark.parametrize('layout', ['channels_last', 'nchw'])
def test_auto_fuses_only_where_the_op_is_exact(monkeypatch, kind, bits, fold,
                                               layout):
    """'auto' (the default) runs a block's depthwise as the fused op
    where its probe found the op's floats equal to torch's, and the flow
    equals the layer-by-layer path bit for bit either way (folded norms,
    dilations, both layouts)."""
    model = packed_backbone(kind, bits, fold)
    if layout == 'channels_last':
        model = to_channels_last(model)
    enable_packed_flow(model)
    fused = []
    op = pf.depthwise_pack

    def counted(parts, x, next_conv=None, float_out=False):
        if next_conv is not None:  # not the probe
            fused.append(parts[0])  # the depthwise conv
        return op(parts, x, next_conv=next_conv, float_out=float_out)

    monkeypatch.setattr(pf, 'depthwise_pack', counted)
    x = torch.randn(1, 3, 64, 64)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    flow = run(model, x)
    monkeypatch.undo()
    exact = {pf._inverted_residual_parts(b).depthwise_module.conv
             for _, b in blocks(model) if b.__dict__.get(pf._DEPTHWISE_EXACT)}
    assert set(fused) <= exact
    if not fold:  # torch's batch norm rounds its own way
        assert not exact
    disable_packed_flow(model)
    for a, b in zip(flow, run(model, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('kernel', ['generic', 'avx2'])
def test_auto_fuses_only_with_a_vector_kernel(monkeypatch, kernel):
    """'auto' leaves the depthwise convs to torch where the op would run
    its portable C++ (MMBINARY_CPU_KERNEL=generic here) and fuses them
    with its AVX2 code as with its AVX-512 code; the same outputs either
    way."""
    monkeypatch.setenv('MMBINARY_CPU_KERNEL', kernel)
    variant = torch.ops.mmbinary.depthwise_pack_variant()
    if kernel == 'avx2' and variant != 'avx2':
        pytest.skip('this CPU or build has no AVX2 depthwise kernel')
    model = to_channels_last(packed_backbone('mmdet', 2, fold=True))
    fused = []
    op = pf.depthwise_pack

    def counted(parts, x, next_conv=None, float_out=False):
        if next_conv is not None:  # not the probe
            fused.append(parts[0])
        return op(parts, x, next_conv=next_conv, float_out=float_out)

    monkeypatch.setattr(pf, 'depthwise_pack', counted)
    enable_packed_flow(model)
    x = torch.randn(1, 3, 64, 64).contiguous(
        memory_format=torch.channels_last)
    flow = run(model, x)
    assert bool(fused) == (variant != 'portable')
    disable_packed_flow(model)
    for a, b in zip(flow, run(model, x)):
        assert torch.equal(a, b)


def test_auto_keeps_torch_where_the_probe_differs(monkeypatch):
    model = to_channels_last(packed_backbone('mmdet', 2, fold=True))
    op = pf.depthwise_pack

    def off_by_one_ulp(parts, x, next_conv=None, float_out=False):
        out, words = op(parts, x, next_conv=next_conv, float_out=float_out)
        return torch.nextafter(out, out + 1) if float_out else out, words

    monkeypatch.setattr(pf, 'depthwise_pack', off_by_one_ulp)
    enable_packed_flow(model)
    x = torch.randn(1, 3, 64, 64).contiguous(
        memory_format=torch.channels_last)
    flow = run(model, x)
    assert not any(b.__dict__[pf._DEPTHWISE_EXACT] for _, b in blocks(model))
    disable_packed_flow(model)
    for a, b in zip(flow, run(model, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('value', ['yes', 1, 'Auto'])
def test_fuse_depthwise_refuses_other_values(value):
    model = packed_backbone('mmdet', 1)
    with pytest.raises(ValueError, match='fuse_depthwise'):
        enable_packed_flow(model, fuse_depthwise=value)


def test_fold_batch_norms_keeps_the_blocks_flowing():
    model = packed_backbone('mmdet', 2, fold=True)
    flowing = enable_packed_flow(model, fuse_depthwise=False)
    assert {name for name, _ in blocks(model)} <= set(flowing)
    x = torch.randn(1, 3, 48, 64)
    flow = run(model, x)
    disable_packed_flow(model)
    for a, b in zip(flow, run(model, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
def test_blocks_hand_the_next_block_its_words(kind):
    model = packed_backbone(kind, 2)
    enable_packed_flow(model)
    stage = model.layer3
    expand = pf._flow_unit(stage[1])
    assert expand is (stage[1].expand_conv.conv
                      if kind == 'mmdet' else stage[1].conv[0].conv)
    x = torch.randn(1, 24, 16, 16)
    with torch.no_grad():
        out = stage[0](x)
        handed = out._mmbinary_next_words
        assert handed[0] is stage[1]
        assert torch.equal(
            handed[2],
            torch.ops.mmbinary.mbb_quantize_pack(out, expand.a_bits,
                                                 float(expand.inv_step),
                                                 expand.signed, 1))
        # A stage's last block hands the next stage's first block its
        # words (the stage chain of the backbone's forward).
        end = stage[2](stage[1](out))
        following = model.layer4[0]
        assert end._mmbinary_next_words[0] is following
        first = pf._flow_unit(following)
        assert torch.equal(
            end._mmbinary_next_words[2],
            torch.ops.mmbinary.mbb_quantize_pack(end, first.a_bits,
                                                 float(first.inv_step),
                                                 first.signed, 1))


def test_a_block_without_expand_conv_takes_float():
    model = packed_backbone('mmdet', 2)
    flowing = enable_packed_flow(model)
    first = model.layer1[0]
    assert not first.with_expand_conv and 'layer1.0' in flowing
    assert pf._flow_unit(first) is None  # the float depthwise reads x
    assert pf._flow_forward(first) is pf._flow_inverted_residual_forward


@pytest.mark.parametrize('fuse', [False, True])
def test_changed_norm_is_read_at_call_time(fuse):
    model = packed_backbone('mmseg', 2)
    enable_packed_flow(model, fuse_depthwise=fuse)
    run(model, torch.randn(1, 3, 32, 32))
    randomize_norms(model, seed=7)  # the depthwise norms are still there
    x = torch.randn(1, 3, 64, 64)
    flow = run(model, x)
    disable_packed_flow(model)
    if fuse:
        depthwise_with_the_op(model)
    for a, b in zip(flow, run(model, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('fuse', [False, True])
def test_flow_propagates_nan_through_the_layer_path(fuse):
    model = packed_backbone('mmdet', 2)
    enable_packed_flow(model, fuse_depthwise=fuse)
    x = torch.randn(1, 3, 64, 64)
    x[0, 0, 20, 20] = float('nan')
    flow = run(model, x)
    disable_packed_flow(model)
    for a, b in zip(flow, run(model, x)):
        assert a.isnan().any()
        assert torch.equal(a.isnan(), b.isnan())


def test_input_that_requires_grad_takes_the_layer_path(monkeypatch):
    model = packed_backbone('mmdet', 2)
    enable_packed_flow(model)

    def refuse(*args):
        raise AssertionError('the flow ran on a tensor requiring grad')

    monkeypatch.setattr(pf, '_flow_inverted_residual', refuse)
    x = torch.randn(1, 24, 16, 16, requires_grad=True)
    out = model.layer3[0](x)
    assert out.requires_grad


def se_or_checkpointed_block(**kwargs) -> nn.Module:
    from mmdet.models.layers import InvertedResidual
    torch.manual_seed(0)
    block = InvertedResidual(16, 16, 64,
                             conv_cfg=dict(type='MBBConv', w_bits=2,
                                           a_bits=2),
                             act_cfg=dict(type='ReLU6'), **kwargs)
    block.train()
    with torch.no_grad():
        block(torch.randn(2, 16, 8, 8))
    return convert_to_packed(block)


@pytest.mark.parametrize('kwargs', [
    dict(se_cfg=dict(channels=64, ratio=4)),
    dict(with_cp=True),
])
def test_blocks_with_se_or_checkpointing_keep_their_forward(kwargs):
    block = se_or_checkpointed_block(**kwargs)
    # Only its packed ConvModules flow, each on its own.
    assert enable_packed_flow(block) == ['expand_conv', 'linear_conv']
    assert 'forward' not in block.__dict__
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        flow = block(x)
        disable_packed_flow(block)
        assert torch.equal(flow, block(x))


def test_disable_gives_blocks_back_their_forward_and_keeps_the_choice():
    model = packed_backbone('mmseg', 1)
    block = model.layer4[1]
    assert block.__dict__.get(pf._FUSE_DEPTHWISE, pf.FUSE_DEPTHWISE) == \
        'auto'
    enable_packed_flow(model, fuse_depthwise=True)
    assert packed_flow_enabled(model)
    assert block.__dict__[pf._FUSE_DEPTHWISE] is True
    disable_packed_flow(model)
    assert 'forward' not in block.__dict__
    assert '_mmbinary_next_block' not in block.__dict__
    enable_packed_flow(model)  # as kernel_choice does after measuring
    assert block.__dict__[pf._FUSE_DEPTHWISE] is True


@pytest.mark.parametrize('bits', [1, 2, 4])
def test_packing_clamps_only_where_no_level_changes(bits):
    model = packed_backbone('mmdet', bits)
    linear = model.layer4[1].linear_conv.conv
    relu6, relu = (0.0, 6.0), (0.0, float('inf'))
    top = (1 << bits) - 1
    values = torch.randn(1, linear.in_channels, 5, 7) * 8
    values[0, :3, 0, 0] = torch.tensor([6.0, float('inf'), -float('inf')])

    def words(x):
        return torch.ops.mmbinary.mbb_quantize_pack(
            x, linear.a_bits, float(linear.inv_step), linear.signed, 1)

    for clip, clamps in ((6.0, True), (5.0, True), (6.5, False)):
        linear.inv_step.fill_(top / clip)
        assert pf.packing_clamps(relu6, linear) is clamps
        assert torch.equal(words(values.clamp(0, 6)), words(values)) or \
            not clamps
        assert pf.packing_clamps(relu, linear)
    assert not pf.packing_clamps(pf.NO_ACTIVATION, linear)
    linear.signed = True
    assert not pf.packing_clamps(relu, linear)


@pytest.mark.skipif(not int8_kernel_available(),
                    reason='no AVX-512 VNNI or no extension')
@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
def test_integer_kernel_flow_equals_popcount_flow(kind):
    """Every packed conv on the integer kernel (the linear convs taking the
    depthwise's float output straight into its levels): the popcount
    flow's outputs, bit for bit."""
    model = packed_backbone(kind, 2)
    x = torch.randn(1, 3, 48, 80)
    popcount = run(model, x)
    for module in model.modules():
        if isinstance(module, PackedMBBConv2d):
            module.set_kernel('int8')
    integer = run(model, x)
    for a, b in zip(popcount, integer):
        assert torch.equal(a, b)


@pytest.mark.skipif(not int8_kernel_available(),
                    reason='no AVX-512 VNNI or no extension')
@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('bits', [1, 2, 4])
@pytest.mark.parametrize('layout', ['channels_last', 'nchw'])
def test_expand_and_depthwise_in_one_pass_equal_the_layers(
        monkeypatch, kind, bits, layout):
    """Expand convs on the integer kernel and fused depthwise convs: every
    block with an expand conv whose input words were handed on runs the two
    in one pass (``expand_depthwise_pack``), the others as before (the
    first block takes the float stem's output, layer1 has no expand conv,
    popcount expand convs); the outputs equal the layer-by-layer path with
    the depthwise op, bit for bit."""
    model = packed_backbone(kind, bits)
    if layout == 'channels_last':
        model = to_channels_last(model)
    for index, module in enumerate(
            m for m in model.modules() if isinstance(m, PackedMBBConv2d)):
        module.set_kernel('popcount' if index == 5 else 'int8')
    one_pass = []
    fused = pf.expand_depthwise_pack

    def counted(expand, *args):
        words = fused(expand, *args)
        one_pass.append((expand[0], words is not None))
        return words

    monkeypatch.setattr(pf, 'expand_depthwise_pack', counted)
    enable_packed_flow(model, fuse_depthwise=True)
    x = torch.randn(1, 3, 61, 83)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    flow = run(model, x)
    monkeypatch.undo()
    expands = [pf._inverted_residual_parts(b).expand for _, b in blocks(model)]
    expands = [e[0] for e in expands if e is not None]
    # the first block with an expand conv (layer2.0) takes layer1's handed
    # words; every one runs in one pass but the popcount one
    assert [conv for conv, _ in one_pass] == expands
    assert [ran for _, ran in one_pass] == [
        conv.kernel == 'int8' for conv in expands]
    assert sum(ran for _, ran in one_pass) >= len(expands) - 1
    disable_packed_flow(model)
    depthwise_with_the_op(model)
    reference = run(model, x)
    for a, b in zip(flow, reference):
        assert torch.equal(a, b)


@pytest.mark.parametrize('kind', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('bits', [1, 2])
@pytest.mark.parametrize('band_bytes', [1, 30000])
@pytest.mark.parametrize('fuse', [False, True])
def test_blocks_in_bands_of_rows_equal_the_layers(monkeypatch, kind, bits,
                                                  band_bytes, fuse):
    """Channels-last blocks run in bands of output rows (one row a band,
    or bands of uneven heights; strides 1 and 2, dilations up to 4, with
    and without an expand conv, on handed words and on float input): the
    layer-by-layer outputs, bit for bit; with the fused depthwise, the
    fused blocks run at once, bit for bit."""
    model = to_channels_last(packed_backbone(kind, bits))
    enable_packed_flow(model, fuse_depthwise=fuse)
    x = torch.randn(1, 3, 52, 84).contiguous(
        memory_format=torch.channels_last)
    if fuse:  # the reference: every block at once
        monkeypatch.setattr(pf, 'MIN_BANDED_BYTES', math.inf)
        at_once = run(model, x)
    monkeypatch.setattr(pf, 'MIN_BANDED_BYTES', 0)
    # (bands of BAND_BYTES per thread)
    monkeypatch.setattr(pf, 'BAND_BYTES',
                        max(1, band_bytes // torch.get_num_threads()))
    banded = []
    in_bands = pf._flow_inverted_residual_in_bands

    def counted(block, parts, x, bands, fuse):
        banded.append((block, bands))
        return in_bands(block, parts, x, bands, fuse)

    monkeypatch.setattr(pf, '_flow_inverted_residual_in_bands', counted)
    flow = run(model, x)
    in_order = [block for block, _ in banded]
    if fuse:  # only the expand convs' floats count: fewer blocks band
        with_expand = [b for _, b in blocks(model)
                       if pf._inverted_residual_parts(b).expand]
        assert in_order and in_order == [b for b in with_expand
                                         if b in in_order]
    else:
        assert in_order == [b for _, b in blocks(model)]
    assert all(bands > 1 for _, bands in banded)
    if fuse:
        reference = at_once
    else:
        disable_packed_flow(model)
        reference = run(model, x)
    for a, b in zip(flow, reference):
        assert a.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b)


def test_bands_only_for_large_channels_last_batch_one_inputs():
    model = packed_backbone('mmdet', 2)
    _, block = blocks(model)[1]  # layer2.0: 16 -> 96 -> stride 2
    parts = pf._inverted_residual_parts(block)
    large = torch.empty(1, 16, 400, 667)
    # expand output 96 x 400 x 667 and depthwise output 96 x 200 x 334
    hidden = 4 * 96 * (400 * 667 + 400 * 667 // 4)
    assert pf._row_bands(parts, large) == 1  # NCHW
    cl = large.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):  # bands of BAND_BYTES per thread
            torch.set_num_threads(count)
            assert pf._row_bands(parts, cl) == math.ceil(
                hidden / (pf.BAND_BYTES * count))
            # the fused depthwise writes words: the expand output alone
            assert pf._row_bands(parts, cl, fuse=True) == math.ceil(
                4 * 96 * 400 * 667 / (pf.BAND_BYTES * count))
    finally:
        torch.set_num_threads(threads)
    assert pf._row_bands(parts, torch.empty(2, 16, 400, 667).contiguous(
        memory_format=torch.channels_last)) == 1
    small = torch.empty(1, 16, 40, 66).contiguous(
        memory_format=torch.channels_last)
    assert pf._row_bands(parts, small) == 1
