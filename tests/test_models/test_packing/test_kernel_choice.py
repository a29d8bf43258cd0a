# Copyright (c) mmbinary contributors. All rights reserved.
"""The per-layer kernel choice: the integer (VNNI) kernel gives exactly the
popcount kernel's outputs inside whole packed models, the choice is timed
per layer, and it is not saved with the weights."""
import copy

import pytest
import torch

from mmbinary.models.backbones import MBBResNet
from mmbinary.models.packing import (KERNELS, PackedMBBConv2d, choose_kernels,
                                     convert_to_packed, int8_kernel_available)
from mmbinary.models.packing.packed_flow import (disable_packed_flow,
                                                 packed_flow_enabled)

pytestmark = pytest.mark.ext

needs_vnni = pytest.mark.skipif(not int8_kernel_available(),
                                reason='no AVX-512 VNNI or no extension')


def packed_backbone(bits: int, depth: int = 18,
                    **options) -> torch.nn.Module:
    torch.manual_seed(bits)
    model = MBBResNet(depth=depth, w_bits=bits, a_bits=bits, base_channels=16,
                      **options)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(-1.0, 1.0)
    return convert_to_packed(model)


def packed_layers(model):
    return [m for m in model.modules() if isinstance(m, PackedMBBConv2d)]


def set_all(model, kernel: str) -> None:
    for layer in packed_layers(model):
        layer.set_kernel(kernel)


@needs_vnni
@pytest.mark.parametrize('bits', [1, 2, 4])
@pytest.mark.parametrize('flow', [True, False])
def test_int8_kernel_gives_the_popcount_outputs(bits, flow):
    model = packed_backbone(bits, depth=50 if bits == 2 else 18)
    if not flow:
        disable_packed_flow(model)
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        popcount = model(x)
        set_all(model, 'int8')
        int8 = model(x)
    assert all(layer.kernel == 'int8' for layer in packed_layers(model))
    for a, b in zip(popcount, int8):
        assert torch.equal(a, b)


@needs_vnni
@pytest.mark.parametrize('stem_bits', [8, (4, 8), (2, 2)])
def test_im2col_kernel_gives_the_popcount_outputs_on_the_stem(stem_bits):
    """The encoded 7x7 stem (3 channels, signed) on 'int8-im2col' inside a
    whole packed model: the popcount kernel's outputs bit for bit, with the
    other layers on either kernel."""
    model = packed_backbone(1, encode_stem=True, stem_bits=stem_bits)
    stem = model.conv1
    assert stem.im2col_unsupported() is None
    x = torch.randn(2, 3, 40, 56) * 2
    with torch.no_grad():
        popcount = model(x)
        stem.set_kernel('int8-im2col')
        folded = model(x)
        set_all(model, 'int8')
        stem.set_kernel('int8-im2col')
        both = model(x)
    for a, b, c in zip(popcount, folded, both):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


@needs_vnni
def test_im2col_is_offered_for_few_channels_only():
    wide = PackedMBBConv2d(32, 8, 3, w_bits=2, a_bits=2, signed=False)
    with pytest.raises(ValueError, match="'int8-im2col' cannot run.*32 "
                       'input channels'):
        wide.set_kernel('int8-im2col')
    pointwise = PackedMBBConv2d(3, 8, 1, w_bits=2, a_bits=2, signed=False)
    with pytest.raises(ValueError, match='1x1 kernel has no taps'):
        pointwise.set_kernel('int8-im2col')
    assert wide.kernel == pointwise.kernel == 'popcount'


@needs_vnni
def test_choose_kernels_times_each_kernel_and_keeps_the_fastest():
    model = packed_backbone(4, encode_stem=True)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        before = model(x)
    lines = []
    choices = choose_kernels(model, lambda: model(x), repeat=1,
                             log=lines.append)
    assert len(choices) == len(packed_layers(model)) == len(lines)
    for choice in choices:
        layer = model.get_submodule(choice.name)
        # im2col folds float inputs, of few channels (the stem: 3; the
        # first block: 16, from the max pool)
        folds = choice.call.startswith('float in') and \
            layer.in_channels < 32 and layer.kernel_size != (1, 1)
        offered = set(KERNELS) - (set() if folds else {'int8-im2col'})
        assert set(choice.ms) == offered
        assert choice.kernel == min(choice.ms, key=choice.ms.get)
        assert layer.kernel == choice.kernel
        assert layer.kernel_ms == choice.ms
        assert choice.input_shape[0] == 1
        assert choice.input_shape[1] == layer.in_channels
    # Each layer was timed on the call the packed flow makes.
    calls = {choice.name: choice.call for choice in choices}
    assert calls['conv1'] == 'float in; float out'
    assert 'int8-im2col' in [c.ms for c in choices if c.name == 'conv1'][0]
    # the first block takes the stem's float output, the others words
    assert calls['layer1.0.conv1'] == 'float in; words out'
    assert calls['layer1.1.conv1'] == 'words in; words out'
    assert calls['layer1.0.conv2'] == 'words in; float + residual + words out'
    assert calls['layer4.1.conv2'] == 'words in; float + residual out'
    assert packed_flow_enabled(model)  # the flow is still on
    with torch.no_grad():
        after = model(x)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


@needs_vnni
@pytest.mark.parametrize('stem_kernel', ['int8', 'int8-im2col'])
def test_the_integer_weights_follow_new_weight_words(stem_kernel):
    """The integer layouts (the stem's folded one too) are built again
    when a checkpoint loads new weight words."""
    model = packed_backbone(2, encode_stem=True, stem_bits=8)
    other = packed_backbone(2, encode_stem=True, stem_bits=8)
    for layer in packed_layers(other):
        layer.weight_words.copy_(torch.roll(layer.weight_words, 1, 0))
    x = torch.randn(1, 3, 32, 32)
    set_all(model, 'int8')
    model.conv1.set_kernel(stem_kernel)
    with torch.no_grad():
        model(x)  # builds the integer layouts
        model.load_state_dict(other.state_dict())
        int8 = model(x)
        expected = other(x)  # popcount, the same weights
    for a, b in zip(int8, expected):
        assert torch.equal(a, b)


def test_the_kernel_is_not_saved():
    model = packed_backbone(2)
    if int8_kernel_available():
        set_all(model, 'int8')
    state = model.state_dict()
    assert not any('kernel' in key or 'int8' in key for key in state)
    fresh = copy.deepcopy(packed_backbone(2))
    fresh.load_state_dict(state)
    assert all(layer.kernel == 'popcount' for layer in packed_layers(fresh))


def test_bad_kernels_are_refused_with_the_reason():
    layer = PackedMBBConv2d(8, 8, 3, padding=1, groups=2, w_bits=2,
                            a_bits=2, signed=False)
    with pytest.raises(ValueError, match=r"kernel must be one of \("):
        layer.set_kernel('vnni')
    with pytest.raises(ValueError, match="kernel='int8' cannot run"):
        layer.set_kernel('int8')
    assert layer.kernel == 'popcount'


@needs_vnni
def test_int8_layer_propagates_nan_like_the_popcount_layer():
    model = packed_backbone(2)
    disable_packed_flow(model)
    layer = model.layer1[0].conv2
    x = torch.randn(1, layer.in_channels, 9, 9)
    x[0, 0, 4, 4] = float('nan')
    with torch.no_grad():
        popcount = layer(x)
        layer.set_kernel('int8')
        int8 = layer(x)
    assert popcount.isnan().any()
    assert torch.equal(popcount.isnan(), int8.isnan())
