# Copyright (c) mmbinary contributors. All rights reserved.
import copy
import time

import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn

from mmbinary.models import MBBConv2d, swap_to_mbb
from mmbinary.models.packing import PackedMBBConv2d, convert_to_packed
from mmbinary.utils import benchmark as bm


def run(model, image):
    return model(image)


def random_statistics(model: nn.Module) -> None:
    """Batch norms with statistics and affine parameters far from the
    identity, so that folding them is visible."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels,
                                                  generator=generator))
            module.running_var.copy_(
                torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(channels,
                                                 generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator))


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = ResNet(depth=18, base_channels=8, out_indices=(0, 1, 2, 3))
    random_statistics(model)
    model.eval()  # (mmdet's ResNet.train() returns None)
    return model


def calibrated_mbb_resnet():
    """A float ResNet-18, its W2A2 encoding (stem float), calibrated."""
    float_model = small_resnet()
    reference = copy.deepcopy(float_model)
    model = swap_to_mbb(float_model, 2, 2, skip=['conv1'])
    model.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(image)  # the quantizers' clips and signs
    return reference, model, image


def test_fold_batch_norms_keeps_the_outputs():
    model = small_resnet()
    image = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected = model(image)
    folded = copy.deepcopy(model)
    # stem + 2 per block (8 blocks) + 3 shortcuts
    assert bm.fold_batch_norms(folded) == 1 + 16 + 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        outputs = folded(image)
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_float_twin_is_the_float_model_it_came_from():
    reference, model, image = calibrated_mbb_resnet()
    twin = bm.float_twin(model)
    assert any(isinstance(m, MBBConv2d) for m in model.modules())
    assert not any(isinstance(m, MBBConv2d) for m in twin.modules())
    assert type(twin.layer1[0].conv1) is nn.Conv2d
    with torch.no_grad():
        for out, ref in zip(twin(image), reference(image)):
            assert torch.equal(out, ref)


def test_time_side_by_side_medians_and_checks():
    times = bm.time_side_by_side(
        dict(slow=lambda: time.sleep(0.02), fast=lambda: None), repeat=3,
        warmup=0)
    assert set(times) == {'slow', 'fast'}
    assert times['slow'] >= 20 > times['fast']
    with pytest.raises(ValueError, match='repeat must be >= 1'):
        bm.time_side_by_side(dict(fast=lambda: None), repeat=0)


def test_fastest_float_times_every_form():
    model = small_resnet()
    image = torch.randn(1, 3, 32, 32)
    best, extra = bm.fastest_float(model, image, run, repeat=1, warmup=0,
                                   extra=dict(other=lambda: None))
    folded = ('folded NCHW', 'folded channels-last',
              'folded channels-last, 1x1 on oneDNN')
    assert set(best.ms) == {'unfolded NCHW', *folded}
    assert best.best in folded
    assert best.best_ms == min(best.ms[name] for name in folded)
    assert best.folded_norms == 20 and set(extra) == {'other'}
    # the input model keeps its norms
    assert isinstance(model.bn1, nn.BatchNorm2d)


@pytest.mark.ext
def test_breakdown_counts_binary_macs_and_the_float_layers_left():
    _, model, image = calibrated_mbb_resnet()
    packed = convert_to_packed(copy.deepcopy(model))
    breakdown = bm.module_breakdown(packed, image, run, repeat=1, warmup=0)
    assert breakdown.packed_layer_count() == sum(
        isinstance(m, PackedMBBConv2d) for m in packed.modules()) == 19
    # layer1.0.conv2: 3x3 8 -> 8 at 16x16 (stem stride 4), W2A2
    kind, calls, macs = breakdown.macs['layer1.0.conv2']
    assert (kind, calls, macs) == ('packed MBB', 1, 2 * 2 * 8 * 9 * 8 * 256)
    # the float stem: 7x7, 3 -> 8, output 32x32
    assert breakdown.macs['conv1'] == ('float conv', 1, 8 * 32 * 32 * 3 * 49)
    binary = sum(layer.binary_macs or 0 for layer in breakdown.layers)
    assert binary == sum(macs for kind, _, macs in breakdown.macs.values()
                         if kind == 'packed MBB')
    kinds = breakdown.by_kind()
    assert kinds['packed MBB'] + kinds['packed flow blocks'] > 0
    assert sum(kinds.values()) == pytest.approx(breakdown.total_ms)
    assert all(layer.ms > 0 and layer.calls == 1
               for layer in breakdown.layers)
    text = bm.describe_encoding(breakdown)
    assert text.startswith('19 packed MBB layers')
    assert '1 float conv (' in text
    for row in bm.packed_layer_rows(breakdown, ghz=3.0):
        assert row['per_cycle'] == pytest.approx(
            row['binary_macs'] / (row['ms'] * 1e-3 * 3e9))


@pytest.mark.ext
def test_agreement_passes_and_catches_a_broken_packed_layer():
    _, model, image = calibrated_mbb_resnet()
    packed = convert_to_packed(copy.deepcopy(model))
    agreement = bm.packed_agreement(model, packed, image, run)
    assert agreement.layers_agree and agreement.layers_checked == 19
    assert agreement.worst_layer_error < 1e-4
    # blocks passing packed activations between their convs, if any, were
    # run again layer by layer
    flow_blocks = sum('forward' in m.__dict__ for m in packed.modules())
    assert agreement.blocks_checked == flow_blocks
    assert agreement.blocks_failing == []

    packed.layer2[0].conv2.out_scale.mul_(1.01)
    broken = bm.packed_agreement(model, packed, image, run)
    assert not broken.layers_agree
    assert broken.layers_failing == ['layer2.0.conv2']
    assert broken.worst_layer_error > 1e-3


@pytest.mark.ext
def test_agreement_of_an_encoded_stem_whose_conv_runs_its_relu():
    """The stem conv of an mmdet ResNet runs its ReLU in the epilogue in
    the flow: the layer check compares the conv itself, the flow check the
    conv with its ReLU; both pass, and a broken stem still fails."""
    from mmbinary.models.backbones import MBBResNet
    torch.manual_seed(0)
    model = MBBResNet(depth=18, w_bits=2, a_bits=2, base_channels=8,
                      encode_stem=True, stem_bits=8)
    model.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(image)
    from mmbinary.models.packing import int8_kernel_available
    from mmbinary.models.packing.packed_flow import passes_on
    packed = convert_to_packed(copy.deepcopy(model))
    assert 'forward' in packed.conv1.__dict__  # the fused stem
    if int8_kernel_available():  # the max pool in the stem conv too
        packed.conv1.set_kernel('int8-im2col')
    agreement = bm.packed_agreement(model, packed, image, run)
    assert agreement.layers_agree and agreement.blocks_failing == []
    assert passes_on(packed.relu) and passes_on(packed.maxpool)
    assert agreement.blocks_checked == sum(
        'forward' in m.__dict__ and not passes_on(m)
        for m in packed.modules())
    packed.conv1.out_bias.add_(0.5)
    broken = bm.packed_agreement(model, packed, image, run)
    assert broken.layers_failing[0] == 'conv1'
