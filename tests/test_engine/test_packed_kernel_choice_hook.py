# Copyright (c) mmbinary contributors. All rights reserved.
"""PackedKernelChoiceHook: the packed convs get their measured kernels on
the first test batch, once, with the same outputs."""
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from torch import nn

from mmbinary.engine import PackedKernelChoiceHook
from mmbinary.models.backbones import MBBResNet
from mmbinary.models.packing import PackedMBBConv2d, convert_to_packed

pytestmark = pytest.mark.ext


class _Detector(nn.Module):
    """The part of a detector the hook calls: test_step."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def test_step(self, data: dict):
        return self.backbone(data['inputs'])


def _packed_detector() -> _Detector:
    torch.manual_seed(0)
    backbone = MBBResNet(depth=18, w_bits=2, a_bits=2, base_channels=16,
                         encode_stem=True, stem_bits=8)
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
    assert 'packed kernels chosen' in runner.logger.info.call_args[0][0]
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
