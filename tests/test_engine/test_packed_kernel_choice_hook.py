# Copyright (c) mmbinary contributors. All rights reserved.
"""PackedKernelChoiceHook: the packed convs get their measured kernels, and
the model its faster memory format, on the first test batch, once, with the
same outputs."""
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from torch import nn

from mmbinary.engine import PackedKernelChoiceHook
from mmbinary.models.backbones import MBBResNet
from mmbinary.models.packing import (PackedMBBConv2d, convert_to_packed,
                                     set_memory_format)

pytestmark = pytest.mark.ext


class _Detector(nn.Module):
    """The part of a detector the hook calls: test_step."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def test_step(self, data: dict):
        return self.backbone(data['inputs'])


def _packed_detector(encode_stem: bool = True) -> _Detector:
    torch.manual_seed(0)
    stem = dict(encode_stem=True, stem_bits=8) if encode_stem else {}
    backbone = MBBResNet(depth=18, w_bits=2, a_bits=2, base_channels=16,
                         **stem)
    backbone.eval()
    with torch.no_grad():
        backbone(torch.randn(1, 3, 64, 64))
    return _Detector(convert_to_packed(backbone))


def test_kernels_are_chosen_once_on_the_first_batch_with_equal_outputs():
    model = _packed_detector()
    batch = dict(inputs=torch.randn(1, 3, 48, 64))
    with torch.no_grad():
        before = model.test_step(batch)
    runner = SimpleNamespace(model=model, logger=mock.MagicMock())
    hook = PackedKernelChoiceHook(repeat=1)
    with torch.no_grad():
        hook.before_test_iter(runner, 0, batch)
        after = model.test_step(batch)
    layers = [m for m in model.modules() if isinstance(m, PackedMBBConv2d)]
    assert all(layer.kernel_ms for layer in layers)  # each one measured
    assert all(layer.kernel == min(layer.kernel_ms, key=layer.kernel_ms.get)
               for layer in layers)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    logged = [call[0][0] for call in runner.logger.info.call_args_list]
    assert 'packed kernels chosen' in logged[0]
    assert 'memory format chosen' in logged[1]
    layers[0].set_kernel('popcount')  # a later batch does not choose again
    with torch.no_grad():
        hook.before_test_iter(runner, 1, batch)
    assert layers[0].kernel == 'popcount'


def test_a_model_without_packed_convs_is_left_alone():
    model = _Detector(nn.Conv2d(3, 4, 3))
    runner = SimpleNamespace(model=model, logger=mock.MagicMock())
    PackedKernelChoiceHook().before_test_iter(
        runner, 0, dict(inputs=torch.randn(1, 3, 8, 8)))
    runner.logger.info.assert_not_called()


@pytest.mark.parametrize('repeat', [0, 1.5, '3'])
def test_repeat_is_checked(repeat):
    with pytest.raises(ValueError, match='repeat must be an int >= 1'):
        PackedKernelChoiceHook(repeat=repeat)


def _weights_channels_last(model: nn.Module) -> bool:
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs
    return all(
        p.is_contiguous(memory_format=torch.channels_last) for p in convs)


@pytest.mark.parametrize('fastest', ['contiguous', 'channels_last'])
def test_the_faster_memory_format_is_kept(fastest):
    """The test step is timed in both formats (alternated, after a warm-up
    each) and the model left in the faster one; the kernels stay where
    ``kernels=False``; the outputs are the same in either format."""
    model = _packed_detector(encode_stem=False)  # a float stem conv
    batch = dict(inputs=torch.randn(1, 3, 48, 64))
    with torch.no_grad():
        before = model.test_step(batch)
    formats = []
    step = model.test_step

    def timed_step(data):
        channels_last = _weights_channels_last(model.backbone)
        formats.append('channels_last' if channels_last else 'contiguous')
        out = step(data)
        if formats[-1] != fastest:
            torch.ones(600, 600) @ torch.ones(600, 600)  # a slower step
        return out

    model.test_step = timed_step
    runner = SimpleNamespace(model=model, logger=mock.MagicMock())
    hook = PackedKernelChoiceHook(repeat=2, kernels=False)
    with torch.no_grad():
        hook.before_test_iter(runner, 0, batch)
    assert formats == ['contiguous', 'channels_last'] * 3
    assert _weights_channels_last(model.backbone) == (
        fastest == 'channels_last')
    assert all(m.kernel == 'popcount' for m in model.modules()
               if isinstance(m, PackedMBBConv2d))
    assert f'memory format chosen on the first test batch: {fastest}' in \
        runner.logger.info.call_args[0][0]
    with torch.no_grad():
        after = step(batch)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def test_a_named_memory_format_is_set_without_timing():
    model = _packed_detector(encode_stem=False)
    runner = SimpleNamespace(model=model, logger=mock.MagicMock())
    with torch.no_grad():
        PackedKernelChoiceHook(memory_format='channels_last',
                               kernels=False).before_test_iter(
                                   runner, 0,
                                   dict(inputs=torch.randn(1, 3, 32, 32)))
    assert _weights_channels_last(model.backbone)
    runner.logger.info.assert_not_called()
    set_memory_format(model, 'contiguous')
    assert all(p.is_contiguous() for p in model.parameters())


def test_memory_format_is_checked():
    with pytest.raises(ValueError, match="memory_format must be one of "
                       r"\['choose', 'channels_last', 'contiguous'\]"):
        PackedKernelChoiceHook(memory_format='nhwc')
    with pytest.raises(ValueError, match='memory_format must be one of'):
        set_memory_format(nn.Conv2d(1, 1, 1), 'nhwc')
